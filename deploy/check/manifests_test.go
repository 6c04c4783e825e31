package check

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifestsDir is deploy/k8s, from deploy/check.
const manifestsDir = "../k8s"

// builtin maps apiVersion/kind to a new upstream object of that type.
var builtin = map[string]func() any{
	"v1/ConfigMap":                       func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                          func() any { return new(corev1.Secret) },
	"v1/Service":                         func() any { return new(corev1.Service) },
	"apps/v1/Deployment":                 func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":      func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return new(networkingv1.NetworkPolicy) },
}

// crds maps apiVersion/kind of a custom resource to its CRD file under testdata.
var crds = map[string]string{
	"keda.sh/v1alpha1/ScaledObject":          "testdata/keda/keda.sh_scaledobjects.yaml",
	"keda.sh/v1alpha1/TriggerAuthentication": "testdata/keda/keda.sh_triggerauthentications.yaml",
}

// kustomization is the part of kustomize's Kustomization the manifests use; strict decoding refuses
// any other field (kustomize's own types are a module this one does not need).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// splitDocs returns the non-empty YAML documents of src.
func splitDocs(src []byte) ([][]byte, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(src)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var probe any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, err
		}
		if probe != nil {
			docs = append(docs, doc)
		}
	}
}

// decodeStrict decodes one manifest document: a built-in kind into its upstream type, refusing unknown
// and duplicate fields and values of the wrong type (sigs.k8s.io/yaml.UnmarshalStrict), and a custom
// resource against its CRD's openAPIV3Schema. It returns the object's apiVersion/kind/name.
func decodeStrict(doc []byte, schemas map[string]*schema) (string, error) {
	var tm struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", err
	}
	gvk := tm.APIVersion + "/" + tm.Kind
	id := gvk + " " + tm.Metadata.Name
	if newObj, ok := builtin[gvk]; ok {
		if err := yaml.UnmarshalStrict(doc, newObj()); err != nil {
			return id, err
		}
		return id, nil
	}
	if s, ok := schemas[gvk]; ok {
		return id, validateCustom(doc, s)
	}
	if tm.Kind == "Kustomization" {
		return id, yaml.UnmarshalStrict(doc, new(kustomization))
	}
	return id, fmt.Errorf("%s: no upstream type or CRD known to this test; add it to builtin or crds", gvk)
}

// validateCustom checks a custom resource as the API server would: metadata as ObjectMeta, the rest
// against the CRD's structural schema (which prunes unknown fields silently: here they fail).
func validateCustom(doc []byte, s *schema) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(js, &obj); err != nil {
		return err
	}
	var errs []error
	if md, ok := obj["metadata"]; ok {
		dec := json.NewDecoder(bytes.NewReader(md))
		dec.DisallowUnknownFields()
		if err := dec.Decode(new(metav1.ObjectMeta)); err != nil {
			errs = append(errs, fmt.Errorf("metadata: %w", err))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	delete(v, "metadata")
	errs = append(errs, s.validate("", v)...)
	errs = append(errs, kedaRules(v)...)
	return errors.Join(errs...)
}

// kedaRules are the CRDs' x-kubernetes-validations (CEL), written out: ScaledObject's only rule.
func kedaRules(v map[string]any) []error {
	if v["kind"] != "ScaledObject" {
		return nil
	}
	spec, _ := v["spec"].(map[string]any)
	minR, hasMin := spec["minReplicaCount"].(json.Number)
	maxR, hasMax := spec["maxReplicaCount"].(json.Number)
	if !hasMin {
		return nil
	}
	lo, _ := minR.Int64()
	hi := int64(100) // KEDA's default maxReplicaCount
	if hasMax {
		hi, _ = maxR.Int64()
	}
	if lo > hi {
		return []error{fmt.Errorf("spec: minReplicaCount must be less than or equal to maxReplicaCount")}
	}
	return nil
}

// loadSchemas reads the openAPIV3Schema of each CRD's served version, by apiVersion/kind.
func loadSchemas(t *testing.T) map[string]*schema {
	t.Helper()
	out := map[string]*schema{}
	for gvk, file := range crds {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Kind string `json:"kind"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Served bool   `json:"served"`
					Schema struct {
						OpenAPIV3Schema *schema `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(src, &crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, v := range crd.Spec.Versions {
			if v.Served && crd.Spec.Group+"/"+v.Name+"/"+crd.Spec.Names.Kind == gvk {
				out[gvk] = v.Schema.OpenAPIV3Schema
			}
		}
		if out[gvk] == nil {
			t.Fatalf("%s serves no version %s", file, gvk)
		}
	}
	return out
}

// TestManifestsDecodeStrictly decodes every object under deploy/k8s, the examples included, with the
// upstream types or KEDA's CRD schema; a field the API server would drop or refuse fails.
func TestManifestsDecodeStrictly(t *testing.T) {
	schemas := loadSchemas(t)
	var files []string
	err := filepath.WalkDir(manifestsDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := splitDocs(src)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for i, doc := range docs {
			id, err := decodeStrict(doc, schemas)
			if err != nil {
				t.Errorf("%s document %d (%s): %v", f, i+1, id, err)
			}
			kinds[strings.Fields(id + " ")[0]]++
		}
	}
	for gvk := range builtin {
		if kinds[gvk] == 0 {
			t.Errorf("no %s under deploy/k8s was checked", gvk)
		}
	}
	for gvk := range crds {
		if kinds[gvk] == 0 {
			t.Errorf("no %s under deploy/k8s was checked", gvk)
		}
	}
	t.Logf("decoded strictly: %v", kinds)
}

// TestDecodeStrictRejects shows the checker refusing what a lax decoder would drop or accept.
func TestDecodeStrictRejects(t *testing.T) {
	schemas := loadSchemas(t)
	deployment := func(extraSpec, extraContainer string) string {
		return `apiVersion: apps/v1
kind: Deployment
metadata: {name: w}
spec:
  selector: {matchLabels: {a: b}}
` + extraSpec + `
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: worker
          image: x
` + extraContainer
	}
	scaledObject := func(spec string) string {
		return `apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w}
spec:
  scaleTargetRef: {name: w}
  triggers:
    - type: redis
      metadata: {listName: l, databaseIndex: "0"}
` + spec
	}
	for _, tc := range []struct {
		name, doc, wantErr string
	}{
		{"a valid Deployment", deployment("", ""), ""},
		{"a valid ScaledObject", scaledObject("  fallback: {failureThreshold: 3, replicas: 4}\n"), ""},
		{"Deployment replica misspelt", deployment("  replica: 2", ""), `unknown field "replica"`},
		{"container field misspelt", deployment("", "          imagePullPolicyy: Always\n"), `unknown field "imagePullPolicyy"`},
		{"a quantity that is not one", deployment("", "          resources: {limits: {ephemeral-storage: lots}}\n"), "quantities must match"},
		{"duplicate field", deployment("  revisionHistoryLimit: 1\n  revisionHistoryLimit: 2", ""), "already set"},
		{"ScaledObject field misspelt", scaledObject("  fallbak: {failureThreshold: 3, replicas: 4}\n"), "spec.fallbak: unknown field"},
		{"fallback without replicas", scaledObject("  fallback: {failureThreshold: 3}\n"), "spec.fallback.replicas: required"},
		{"fallback behavior not an enum value", scaledObject("  fallback: {failureThreshold: 3, replicas: 4, behavior: always}\n"), "spec.fallback.behavior: \"always\" not one of"},
		{"an integer given as a string", scaledObject("  pollingInterval: \"15\"\n"), "spec.pollingInterval: want integer"},
		{"min above max (the CRD's CEL rule)", scaledObject("  minReplicaCount: 5\n  maxReplicaCount: 2\n"), "minReplicaCount must be less than or equal"},
		{"negative replicas", scaledObject("  minReplicaCount: -1\n"), "spec.minReplicaCount: -1 is below the minimum 0"},
		{"trigger metadata not a string", `apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w}
spec:
  scaleTargetRef: {name: w}
  triggers:
    - type: redis
      metadata: {databaseIndex: 0}
`, "spec.triggers[0].metadata.databaseIndex: want string"},
		{"metadata field misspelt", `apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: w, label: {a: b}}
spec: {}
`, `unknown field "label"`},
		{"TriggerAuthentication field misspelt", `apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: w}
spec:
  secretTargetRefs: [{parameter: password, name: s, key: k}]
`, "spec.secretTargetRefs: unknown field"},
		{"an unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "no upstream type or CRD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(tc.doc), schemas)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("decodeStrict: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("decodeStrict = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------------
// A structural-schema validator: the subset of OpenAPI v3 that KEDA's CRDs use (controller-gen's
// output). x-kubernetes-validations (CEL) are in kedaRules.

type schema struct {
	Type                 string             `json:"type"`
	Properties           map[string]*schema `json:"properties"`
	AdditionalProperties json.RawMessage    `json:"additionalProperties"`
	Items                *schema            `json:"items"`
	Required             []string           `json:"required"`
	Enum                 []any              `json:"enum"`
	Minimum              *float64           `json:"minimum"`
	MinItems             *int               `json:"minItems"`
	MinLength            *int               `json:"minLength"`
	Pattern              string             `json:"pattern"`
	AnyOf                []*schema          `json:"anyOf"`
	IntOrString          bool               `json:"x-kubernetes-int-or-string"`
	PreserveUnknown      bool               `json:"x-kubernetes-preserve-unknown-fields"`
	Nullable             bool               `json:"nullable"`
}

func (s *schema) validate(path string, v any) []error {
	at := func(format string, args ...any) []error {
		return []error{fmt.Errorf("%s: "+format, append([]any{strings.TrimPrefix(path, ".")}, args...)...)}
	}
	if v == nil {
		if s.Nullable {
			return nil
		}
		return at("null (an empty YAML value): want %s", s.Type)
	}
	if s.IntOrString {
		switch x := v.(type) {
		case json.Number:
			if _, err := x.Int64(); err != nil {
				return at("%v: want an integer or a string", x)
			}
			return nil
		case string:
			if s.Pattern != "" && !regexp.MustCompile(s.Pattern).MatchString(x) {
				return at("%q does not match %s", x, s.Pattern)
			}
			return nil
		}
		return at("want an integer or a string")
	}
	if len(s.Enum) > 0 && !slices.ContainsFunc(s.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		return at("%q not one of %v", v, s.Enum)
	}
	switch s.Type {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return at("want an object")
		}
		var errs []error
		for _, r := range s.Required {
			if _, ok := m[r]; !ok {
				errs = append(errs, fmt.Errorf("%s: required", strings.TrimPrefix(path+"."+r, ".")))
			}
		}
		var extra *schema
		if len(s.AdditionalProperties) > 0 && string(s.AdditionalProperties) != "true" && string(s.AdditionalProperties) != "false" {
			extra = new(schema)
			if err := json.Unmarshal(s.AdditionalProperties, extra); err != nil {
				return at("additionalProperties: %v", err)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			child, ok := s.Properties[k]
			switch {
			case ok:
			case extra != nil:
				child = extra
			case s.PreserveUnknown || (s.Properties == nil && string(s.AdditionalProperties) != "false"):
				continue
			default:
				errs = append(errs, fmt.Errorf("%s: unknown field (the API server would drop it)", strings.TrimPrefix(path+"."+k, ".")))
				continue
			}
			errs = append(errs, child.validate(path+"."+k, m[k])...)
		}
		return errs
	case "array":
		l, ok := v.([]any)
		if !ok {
			return at("want an array")
		}
		if s.MinItems != nil && len(l) < *s.MinItems {
			return at("%d items, want at least %d", len(l), *s.MinItems)
		}
		var errs []error
		for i, e := range l {
			if s.Items != nil {
				errs = append(errs, s.Items.validate(fmt.Sprintf("%s[%d]", path, i), e)...)
			}
		}
		return errs
	case "string":
		x, ok := v.(string)
		if !ok {
			return at("want string, got %v", v)
		}
		if s.MinLength != nil && len(x) < *s.MinLength {
			return at("%q is shorter than %d", x, *s.MinLength)
		}
		if s.Pattern != "" && !regexp.MustCompile(s.Pattern).MatchString(x) {
			return at("%q does not match %s", x, s.Pattern)
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			return at("want %s, got %v", s.Type, v)
		}
		f, err := n.Float64()
		if _, ierr := n.Int64(); err != nil || (s.Type == "integer" && ierr != nil) {
			return at("%v is not an %s", n, s.Type)
		}
		if s.Minimum != nil && f < *s.Minimum {
			return at("%v is below the minimum %v", n, *s.Minimum)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return at("want boolean, got %v", v)
		}
	case "":
		if len(s.AnyOf) > 0 {
			for _, alt := range s.AnyOf {
				if len(alt.validate(path, v)) == 0 {
					return nil
				}
			}
			return at("matches none of anyOf")
		}
	}
	return nil
}
