package contract_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"
	"go.yaml.in/yaml/v4"

	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// specEnv names the spec file. CI sets it; a developer sets it to run this test.
const specEnv = "VERSORI_SPEC"

// runHint is how to run this test from the module root, where ../shared is the shared directory.
const runHint = specEnv + "=../shared/versori/embedded-api-v1.yaml go test ./versori/contract"

// specException is one bug of the published spec, excused by patching the document in memory. Each
// patch first checks that the bug is still there and returns errStale when it is not, so that an
// upstream fix turns the entry into a test failure instead of an excuse for something else.
type specException struct {
	name  string // short name, used in messages
	where string // JSON pointer of the element at fault
	why   string // what is wrong and why the patch is the API's real behaviour
	// Exactly one of source and doc is set: source patches the YAML before loading, for bugs that
	// stop kin-openapi from loading the document at all; doc patches the loaded document.
	source func(root *yaml.Node) error
	doc    func(doc *openapi3.T) error
}

var errStale = errors.New("the spec no longer has this bug: remove the exception")

// specExceptions is the one list of what the contract test excuses in the spec. Nothing else is.
var specExceptions = []specException{
	{
		name:  "additionalParams-examples-is-a-map",
		where: "#/components/schemas/InitialiseOAuth2ConnectionRequest/properties/additionalParams/examples",
		why: "In OpenAPI 3.1 a Schema's `examples` is JSON Schema 2020-12's, an array; the spec writes a map of " +
			"named examples (the shape of a Parameter's `examples`), and kin-openapi refuses to load the whole " +
			"document. The schema belongs to InitialiseOAuth2EmbeddedConnection, which activator never calls. " +
			"Patch: the map becomes an array of its values, before loading.",
		source: func(root *yaml.Node) error {
			n := yamlLookup(root, "components", "schemas", "InitialiseOAuth2ConnectionRequest", "properties",
				"additionalParams", "examples")
			if n == nil || n.Kind != yaml.MappingNode {
				return errStale
			}
			var values []*yaml.Node
			for i := 1; i < len(n.Content); i += 2 {
				values = append(values, n.Content[i])
			}
			n.Kind, n.Tag, n.Style, n.Content = yaml.SequenceNode, "!!seq", 0, values
			return nil
		},
	},
	{
		name:  "ActivationCreate-requires-variables",
		where: "#/components/schemas/ActivationCreate/required",
		why: "`required` lists `variables`, a property ActivationCreate does not have: its variables are " +
			"`dynamicVariables`, which the reference page of POST /activations shows as an optional object and " +
			"which activator sends only when the row has some. Taken literally, no request could be valid " +
			"without a stray `variables` field. Patch: `variables` is removed from `required`; " +
			"`dynamicVariables` stays optional.",
		doc: func(doc *openapi3.T) error {
			s := componentSchema(doc, "ActivationCreate")
			if s == nil || !slices.Contains(s.Required, "variables") || s.Properties["variables"] != nil {
				return errStale
			}
			s.Required = slices.DeleteFunc(s.Required, func(r string) bool { return r == "variables" })
			return nil
		},
	},
	{
		name:  "ActivationCreate-userIdType-does-not-exist",
		where: "#/components/schemas/ActivationCreate/properties/userId/description",
		why: "The description says whether userId is Versori's id or the external one is \"indicated by the " +
			"`userIdType` field\", but ActivationCreate has no such field. Validation does not trip on it (the " +
			"schema allows unknown properties and activator never sends one; its userId is the external id), so " +
			"nothing is patched: the entry keeps the discrepancy on record and notices when it is fixed.",
		doc: func(doc *openapi3.T) error {
			s := componentSchema(doc, "ActivationCreate")
			if s == nil || s.Properties["userIdType"] != nil || s.Properties["userId"] == nil ||
				s.Properties["userId"].Value == nil ||
				!strings.Contains(s.Properties["userId"].Value.Description, "userIdType") {
				return errStale
			}
			return nil
		},
	},
	{
		name:  "CredentialCreate-data-oneOf-is-ambiguous",
		where: "#/components/schemas/CredentialCreate/properties/data/oneOf",
		why: "CredentialDataBasicAuth and CredentialDataOAuth2Password are the same schema (username and " +
			"password, both required), so under `oneOf` the data of every basic-auth or oauth2-password " +
			"credential matches two branches and is refused: no such credential could be created. The API " +
			"tells the branches apart by the credential's `type`. Patch: `oneOf` becomes `anyOf`, which still " +
			"demands that the data match one of the credential data schemas.",
		doc: func(doc *openapi3.T) error {
			s := componentSchema(doc, "CredentialCreate")
			if s == nil || s.Properties["data"] == nil || s.Properties["data"].Value == nil {
				return errStale
			}
			data := s.Properties["data"].Value
			basic, password := componentSchema(doc, "CredentialDataBasicAuth"), componentSchema(doc, "CredentialDataOAuth2Password")
			if len(data.OneOf) == 0 || !hasRef(data.OneOf, "CredentialDataBasicAuth") ||
				!hasRef(data.OneOf, "CredentialDataOAuth2Password") || basic == nil || password == nil ||
				!sameObjectShape(basic, password) {
				return errStale
			}
			data.AnyOf, data.OneOf = data.OneOf, nil
			return nil
		},
	},
}

func hasRef(refs openapi3.SchemaRefs, component string) bool {
	return slices.ContainsFunc(refs, func(r *openapi3.SchemaRef) bool {
		return r.Ref == "#/components/schemas/"+component
	})
}

// sameObjectShape reports whether a and b accept the same objects as far as their properties go: the
// same property names and types, and the same required ones.
func sameObjectShape(a, b *openapi3.Schema) bool {
	if len(a.Properties) != len(b.Properties) || !slices.Equal(slices.Sorted(slices.Values(a.Required)),
		slices.Sorted(slices.Values(b.Required))) || a.AdditionalProperties != b.AdditionalProperties {
		return false
	}
	for name, pa := range a.Properties {
		pb := b.Properties[name]
		if pb == nil || pa.Value == nil || pb.Value == nil || !pa.Value.Type.Is("string") || !pb.Value.Type.Is("string") {
			return false
		}
	}
	return true
}

// yamlLookup follows mapping keys from root, returning nil when one is missing.
func yamlLookup(root *yaml.Node, keys ...string) *yaml.Node {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

func componentSchema(doc *openapi3.T, name string) *openapi3.Schema {
	if doc.Components == nil || doc.Components.Schemas[name] == nil {
		return nil
	}
	return doc.Components.Schemas[name].Value
}

// specPath returns the spec's path, skipping the test (or failing it under CI) when it is not set. A
// relative path is taken from the module root, which is where `go test ./versori/contract` is run.
func specPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv(specEnv)
	if p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s must be set in CI (to ../shared/versori/embedded-api-v1.yaml): the contract test "+
				"against Versori's published spec cannot run without it", specEnv)
		}
		t.Skipf("CONTRACT TEST DID NOT RUN: %s is not set, so the client and the stand-in were not checked "+
			"against Versori's published spec. Run it from the module root with:\n\t%s", specEnv, runHint)
	}
	if filepath.IsAbs(p) {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("%s=%s is relative, and the module root was not found to resolve it: %v", specEnv, p, err)
	}
	return filepath.Join(root, p)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// loadSpec reads the spec, applies the exceptions and validates the document.
func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	path := specPath(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the spec (%s=%s): %v", specEnv, path, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatalf("parsing the spec %s: %v", path, err)
	}
	for _, ex := range specExceptions {
		if ex.source != nil {
			applyException(t, ex, ex.source(&root))
		}
	}
	patched, err := yaml.Marshal(&root)
	if err != nil {
		t.Fatalf("re-encoding the patched spec: %v", err)
	}
	loader := openapi3.NewLoader() // external refs stay disallowed: the spec is one self-contained file
	doc, err := loader.LoadFromData(patched)
	if err != nil {
		t.Fatalf("loading the spec %s with kin-openapi: %v", path, err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("the spec is OpenAPI %s; this test expects 3.1 (it validates with JSON Schema 2020-12)", doc.OpenAPI)
	}
	for _, ex := range specExceptions {
		if ex.doc != nil {
			applyException(t, ex, ex.doc(doc))
		}
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the spec (with the exceptions applied) is not a valid OpenAPI document: %v", err)
	}
	t.Logf("spec %s: %s %s (OpenAPI %s), %d exceptions", path, doc.Info.Title, doc.Info.Version, doc.OpenAPI,
		len(specExceptions))
	return doc
}

func applyException(t *testing.T, ex specException, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("spec exception %q (%s) is stale: %v", ex.name, ex.where, err)
	}
}

// ulidFormat checks the spec's `format: ulid`, which no JSON Schema vocabulary defines, as the 26
// Crockford base32 characters the API's ids are.
func ulidFormat(s string) error {
	if _, err := ulid.ParseStrict(s); err != nil {
		return errors.New("not a ULID (26 Crockford base32 characters)")
	}
	return nil
}

// uriFormat checks `format: uri` (imageUrl) as RFC 3986 says a URI is: absolute, with a scheme.
// kin-openapi leaves this format unchecked.
func uriFormat(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if !u.IsAbs() {
		return errors.New("not an absolute URI")
	}
	return nil
}

// validator checks exchanges against the spec and collects every violation.
type validator struct {
	router routers.Router
	opts   *openapi3filter.Options

	mu         sync.Mutex
	violations []string
	seen       map[string]int // "OperationId status" -> count
}

// newValidator routes requests to the spec's operations as if the spec's production server were base,
// keeping the production base path (/api/embedded/v1) so that the client's use of it is checked too.
func newValidator(t *testing.T, doc *openapi3.T, standinURL string) (*validator, string) {
	t.Helper()
	if len(doc.Servers) == 0 {
		t.Fatal("the spec declares no servers")
	}
	prod, err := url.Parse(doc.Servers[0].URL)
	if err != nil {
		t.Fatalf("the spec's first server URL %q: %v", doc.Servers[0].URL, err)
	}
	base := strings.TrimRight(standinURL, "/") + strings.TrimRight(prod.Path, "/")
	doc.Servers = openapi3.Servers{{URL: base, Description: "versoritest stand-in"}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("building the router: %v", err)
	}
	opts := &openapi3filter.Options{
		MultiError:            true,
		IncludeResponseStatus: true,
		SkipSettingDefaults:   true,
		// The spec declares no security schemes; should it start to, the Authorization header is
		// still checked by this test's own authCheck, not by openapi3filter.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidator("ulid", openapi3.NewCallbackValidator(ulidFormat)),
			openapi3.WithStringFormatValidator("uri", openapi3.NewCallbackValidator(uriFormat)),
		},
	}
	// The JSON Schema 2020-12 validator's reason names the failing value's path and the rule it
	// breaks; the default message adds a dump of the schema and the value to every violation.
	opts.WithCustomSchemaErrorFunc(func(err *openapi3.SchemaError) string { return err.Reason })
	return &validator{router: router, opts: opts, seen: make(map[string]int)}, base
}

func (v *validator) violate(call, format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.violations = append(v.violations, call+": "+fmt.Sprintf(format, args...))
}

// report fails t with every violation collected since the last report.
func (v *validator) report(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	vs := v.violations
	v.violations = nil
	v.mu.Unlock()
	if len(vs) > 0 {
		t.Errorf("%d exchange(s) violate the Embedded API spec:\n- %s", len(vs), strings.Join(vs, "\n- "))
	}
}

// validateRequest finds req's operation and validates req (whose body is body) against it.
func (v *validator) validateRequest(req *http.Request, body []byte) (*openapi3filter.RequestValidationInput, error) {
	vreq := req.Clone(req.Context())
	vreq.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := v.router.FindRoute(vreq)
	if err != nil {
		return nil, fmt.Errorf("no operation of the spec serves it: %w", err)
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: v.opts}
	if err := openapi3filter.ValidateRequest(vreq.Context(), in); err != nil {
		return in, fmt.Errorf("request of %s: %w", route.Operation.OperationID, err)
	}
	return in, nil
}

// validateResponse validates a response to the request in.
func (v *validator) validateResponse(in *openapi3filter.RequestValidationInput, status int, header http.Header, body []byte) error {
	op := in.Route.Operation
	if status >= 400 {
		// Error answers must be the documented Error body, whatever the status.
		r := op.Responses.Status(status)
		if r == nil {
			r = op.Responses.Default()
		}
		var mt *openapi3.MediaType
		if r != nil && r.Value != nil {
			mt = r.Value.Content.Get("application/json")
		}
		if mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/Error" {
			return fmt.Errorf("%s documents no Error body for status %d", op.OperationID, status)
		}
	}
	rin := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header,
		Options: v.opts}
	rin.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(in.Request.Context(), rin); err != nil {
		which := fmt.Sprintf("%d", status)
		if op.Responses.Status(status) == nil {
			which = "default"
		}
		return fmt.Errorf("%s response of %s: %w", which, op.OperationID, err)
	}
	if status == http.StatusNoContent && len(body) > 0 {
		return fmt.Errorf("204 response of %s has a body of %d bytes", op.OperationID, len(body))
	}
	return nil
}

// authCheck checks a request's Authorization header, which the spec does not describe.
type authCheck func(header string) error

// bearer expects "Authorization: Bearer <key>".
func bearer(key string) authCheck {
	return func(h string) error {
		if h != "Bearer "+key || key == "" || strings.ContainsAny(key, " \t\r\n") {
			return fmt.Errorf("Authorization is %q, want \"Bearer <the API key>\"", redact(h))
		}
		return nil
	}
}

// jwtAuth expects "Authorization: JWT <token>", an RS256 token of the signing key keyID.
func jwtAuth(keyID string, pub *rsa.PublicKey) authCheck {
	p := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(versori.JWTIssuerPrefix+keyID),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	return func(h string) error {
		tok, ok := strings.CutPrefix(h, "JWT ")
		if !ok || strings.Count(tok, ".") != 2 {
			return fmt.Errorf("Authorization is %q, want \"JWT <token>\"", redact(h))
		}
		var claims jwt.RegisteredClaims
		if _, err := p.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
			return fmt.Errorf("JWT token: %w", err)
		}
		if claims.Subject == "" {
			return errors.New("JWT token has no sub (the end user's external id)")
		}
		return nil
	}
}

func redact(h string) string {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok {
		return h
	}
	if len(cred) > 4 {
		cred = cred[:4] + "…"
	}
	return scheme + " " + cred
}

// transport validates every exchange the client makes, then hands the client the response unchanged.
type transport struct {
	v    *validator
	auth authCheck
	base http.RoundTripper
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	call := req.Method + " " + req.URL.RequestURI()
	in, err := tr.v.validateRequest(req, body)
	if err != nil {
		tr.v.violate(call, "%v", err)
	}
	if err := tr.auth(req.Header.Get("Authorization")); err != nil {
		tr.v.violate(call, "%v", err)
	}

	out := req.Clone(req.Context())
	if req.Body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.ContentLength = int64(len(body))
	}
	resp, err := tr.base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	rbody, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		// The client meets the same short body and the same error, and there is nothing whole to validate.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(rbody), errReader{err}))
		return resp, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(rbody))
	if in == nil {
		return resp, nil
	}
	tr.v.mu.Lock()
	tr.v.seen[fmt.Sprintf("%s %d", in.Route.Operation.OperationID, resp.StatusCode)]++
	tr.v.mu.Unlock()
	if err := tr.v.validateResponse(in, resp.StatusCode, resp.Header, rbody); err != nil {
		tr.v.violate(fmt.Sprintf("%s -> %d", call, resp.StatusCode), "%v", err)
	}
	return resp, nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// newClient returns a client of the stand-in whose every exchange the validator checks.
func newClient(t *testing.T, v *validator, base, hubID string, auth versori.Authenticator, check authCheck) *versori.Client {
	t.Helper()
	inner := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(inner.CloseIdleConnections)
	c, err := versori.New(versori.Config{
		BaseURL:    base,
		HubID:      hubID,
		Auth:       auth,
		Timeout:    10 * time.Second,
		HTTPClient: &http.Client{Transport: &transport{v: v, auth: check, base: inner}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newID() string { return ulid.Make().String() }

// apiError returns err as an API error with the given status, failing t otherwise.
func apiError(t *testing.T, err error, status int) *versori.Error {
	t.Helper()
	var ae *versori.Error
	if !errors.As(err, &ae) || ae.StatusCode != status {
		t.Fatalf("got error %v, want an HTTP %d error response", err, status)
	}
	if ae.Code == "" || ae.Message == "" {
		t.Errorf("HTTP %d error body decoded without code or message: %+v", status, ae.ErrorBody)
	}
	return ae
}

// noAuthConnection is a new connection whose one action credential needs no secret: the smallest
// ConnectionCredentialsCreate the spec accepts.
func noAuthConnection(templateID string) versori.ActivationConnection {
	return versori.ActivationConnection{
		TemplateID: templateID,
		Name:       "no-auth connection",
		Credentials: mustJSON(map[string]any{"action": []any{map[string]any{
			"authSchemeConfig": map[string]any{"id": newID(), "description": "no authentication", "schemeType": "none"},
			"credential":       map[string]any{"name": "none", "type": "none", "data": map[string]any{}},
		}}}),
	}
}

// apiKeyConnection is a new connection authenticating with an API key sent in a header.
func apiKeyConnection(templateID string) versori.ActivationConnection {
	return versori.ActivationConnection{
		TemplateID: templateID,
		Name:       "api-key connection",
		Credentials: mustJSON(map[string]any{"action": []any{map[string]any{
			"authSchemeConfig": map[string]any{"id": newID(), "description": "API key header",
				"schemeType": "api-key", "name": "X-Api-Key", "in": "header"},
			"credential": map[string]any{"name": "shop key", "type": "string",
				"data": map[string]any{"value": "sk_test_123"}},
		}}}),
		Variables: []versori.ConnectionVariable{{Name: "region", Value: "eu-west-1"}},
	}
}

// basicAuthConnection is a new connection authenticating with a username and password.
func basicAuthConnection(templateID string) versori.ActivationConnection {
	return versori.ActivationConnection{
		TemplateID: templateID,
		Name:       "basic-auth connection",
		Credentials: mustJSON(map[string]any{"action": []any{map[string]any{
			"authSchemeConfig": map[string]any{"id": newID(), "description": "basic auth", "schemeType": "basic-auth"},
			"credential": map[string]any{"name": "erp login", "type": "basic-auth",
				"data": map[string]any{"username": "svc-activator", "password": "hunter2"}},
		}}}),
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestValidatorIsLive proves the validation is not vacuous: with the spec loaded as the contract test
// loads it, bodies that break it are refused, ULID formats included.
func TestValidatorIsLive(t *testing.T) {
	doc := loadSpec(t)
	v, base := newValidator(t, doc, "http://standin.invalid")

	post := func(body string) error {
		req, _ := http.NewRequest(http.MethodPost, base+"/activations", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		_, err := v.validateRequest(req, []byte(body))
		return err
	}
	good := `{"userId":"u1","integrationId":"` + newID() + `","connections":[]}`
	if err := post(good); err != nil {
		t.Errorf("a minimal valid ActivationCreate is refused: %v", err)
	}
	for name, body := range map[string]string{
		"integrationId not a ULID": `{"userId":"u1","integrationId":"nope","connections":[]}`,
		"connections missing":      `{"userId":"u1","integrationId":"` + newID() + `"}`,
		"connection of neither form": `{"userId":"u1","integrationId":"` + newID() +
			`","connections":[{"templateId":"` + newID() + `"}]}`,
		"dynamicVariables not an object": `{"userId":"u1","integrationId":"` + newID() +
			`","connections":[],"dynamicVariables":[1]}`,
	} {
		if err := post(body); err == nil {
			t.Errorf("request with %s passes validation", name)
		}
	}

	// The lifecycle writes' requests: what the client must never send is refused.
	send := func(method, path, body string) error {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		_, err := v.validateRequest(req, []byte(body))
		return err
	}
	users := "/hubs/" + newID() + "/users"
	if err := send(http.MethodPost, users, `{"externalId":"u1","primaryConnection":{"name":"p","credentials":{},"variables":[]}}`); err != nil {
		t.Errorf("a minimal valid EndUserCreate is refused: %v", err)
	}
	for name, body := range map[string]string{
		"no primaryConnection": `{"externalId":"u1"}`,
		"no externalId":        `{"primaryConnection":{"name":"p","credentials":{},"variables":[]}}`,
		"null variables":       `{"externalId":"u1","primaryConnection":{"name":"p","credentials":{},"variables":null}}`,
		"null credentials":     `{"externalId":"u1","primaryConnection":{"name":"p","credentials":null,"variables":[]}}`,
	} {
		if err := send(http.MethodPost, users, body); err == nil {
			t.Errorf("EndUserCreate with %s passes validation", name)
		}
	}
	if err := send(http.MethodPut, "/activations/"+newID()+"/variables", `{"dynamicVariables":{"a":1}}`); err != nil {
		t.Errorf("a valid UpdateDynamicVariables is refused: %v", err)
	}
	if err := send(http.MethodPut, "/activations/"+newID()+"/variables", `{"dynamicVariables":[1]}`); err == nil {
		t.Error("UpdateDynamicVariables with an array passes validation")
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/activations/"+newID(), nil)
	in, err := v.validateRequest(req, nil)
	if err != nil {
		t.Fatalf("GET /activations/{id} is refused: %v", err)
	}
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	activation := func(edit func(a map[string]any)) []byte {
		now := time.Now().UTC().Format(time.RFC3339Nano)
		a := map[string]any{
			"id": newID(), "hubId": newID(),
			"user": map[string]any{"id": newID(), "externalId": "u1", "displayName": "u1", "hubId": newID(),
				"createdAt": now, "updatedAt": now,
				"primaryConnection": map[string]any{"id": newID(), "name": "primary", "variables": []any{},
					"credentials": map[string]any{"action": []any{}}, "createdAt": now, "updatedAt": now}},
			"integration": map[string]any{"id": newID(), "name": "n", "imageUrl": "https://example.com/i.png",
				"description": "d", "isDeployed": true, "isActivated": true},
		}
		if edit != nil {
			edit(a)
		}
		return mustJSON(a)
	}
	if err := v.validateResponse(in, http.StatusOK, jsonHeader, activation(nil)); err != nil {
		t.Errorf("a valid Activation is refused: %v", err)
	}
	for name, edit := range map[string]func(a map[string]any){
		"no user":              func(a map[string]any) { delete(a, "user") },
		"hubId not a ULID":     func(a map[string]any) { a["hubId"] = "hub-1" },
		"imageUrl not a URI":   func(a map[string]any) { a["integration"].(map[string]any)["imageUrl"] = "i.png" },
		"createdAt not a time": func(a map[string]any) { a["user"].(map[string]any)["createdAt"] = "yesterday" },
		"empty credentials": func(a map[string]any) {
			a["user"].(map[string]any)["primaryConnection"].(map[string]any)["credentials"] = map[string]any{}
		},
	} {
		if err := v.validateResponse(in, http.StatusOK, jsonHeader, activation(edit)); err == nil {
			t.Errorf("an Activation with %s passes validation", name)
		}
	}
	if err := v.validateResponse(in, http.StatusNotFound, jsonHeader, []byte(`{"message":"gone"}`)); err == nil {
		t.Error("error response without code passes validation against the default Error response")
	}
	if err := v.validateResponse(in, http.StatusNotFound, jsonHeader,
		[]byte(`{"code":"404000","message":"gone","fields":[{"field":"id"}]}`)); err == nil {
		t.Error("error response with a field without message passes validation")
	}
}

// TestContract runs the client's every operation against the stand-in, the successes and the error
// responses, and fails on any request or response that the spec does not allow.
func TestContract(t *testing.T) {
	doc := loadSpec(t)

	const keyID = "01J5S1GN1NGKEY00000000000A"
	signingKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := versoritest.New(t, versoritest.Options{PageSize: 2, SigningKeyID: keyID, PublicKey: &signingKey.PublicKey})
	v, base := newValidator(t, doc, s.URL())
	t.Cleanup(func() { v.report(t) })

	c := newClient(t, v, base, s.HubID(), versori.APIKey(s.APIKey()), bearer(s.APIKey()))
	ctx := context.Background()

	// run runs a subtest and reports the violations of its exchanges under its name.
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			defer v.report(t)
			f(t)
		})
	}

	check := func(t *testing.T, a any, id, hub, user, integration string, p versori.Pair) {
		t.Helper()
		if id == "" || hub != s.HubID() || user != p.UserID || integration != p.IntegrationID {
			t.Errorf("activation %+v does not match pair %+v on hub %s", a, p, s.HubID())
		}
	}
	checkActivation := func(t *testing.T, a *versori.Activation, p versori.Pair) {
		t.Helper()
		if a == nil {
			t.Fatalf("no activation for pair %+v", p)
		}
		check(t, a, a.ID, a.HubID, a.User.ExternalID, a.Integration.ID, p)
	}
	// Activate reads only the id: the whole activation comes from GET /activations/{id}.
	checkActivated := func(t *testing.T, a *versori.Activated, p versori.Pair) {
		t.Helper()
		if a == nil || a.ID == "" {
			t.Fatalf("no activation id for pair %+v: %+v", p, a)
		}
		full, err := c.GetActivation(ctx, a.ID)
		if err != nil {
			t.Fatalf("GetActivation(%s): %v", a.ID, err)
		}
		checkActivation(t, full, p)
	}

	run("activate with an existing connection", func(t *testing.T) {
		req := versori.ActivationRequest{UserID: "user-existing", IntegrationID: newID(),
			Connections: []versori.ActivationConnection{{TemplateID: newID(), ConnectionID: newID()}}}
		a, err := c.Activate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		checkActivated(t, a, req.Pair())
	})

	run("activate with a new connection and dynamic variables", func(t *testing.T) {
		req := versori.ActivationRequest{UserID: "user-new@example.com", IntegrationID: newID(),
			Connections:      []versori.ActivationConnection{noAuthConnection(newID())},
			DynamicVariables: json.RawMessage(`{"region":"eu","batchSize":50,"dryRun":false}`)}
		a, err := c.Activate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		checkActivated(t, a, req.Pair())
	})

	run("activate with new and existing connections without dynamic variables", func(t *testing.T) {
		req := versori.ActivationRequest{UserID: "user-mixed", IntegrationID: newID(),
			Connections: []versori.ActivationConnection{
				apiKeyConnection(newID()),
				{TemplateID: newID(), ConnectionID: newID()},
				basicAuthConnection(newID()),
				noAuthConnection(newID()),
			}}
		a, err := c.Activate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		checkActivated(t, a, req.Pair())
	})

	run("activate with no connections", func(t *testing.T) {
		req := versori.ActivationRequest{UserID: "user-none", IntegrationID: newID()}
		a, err := c.Activate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		checkActivated(t, a, req.Pair())
	})

	run("list, find and get across pages", func(t *testing.T) {
		const user = "user-pages"
		var ids, integrations []string
		for i := range 5 {
			req := versori.ActivationRequest{UserID: user, IntegrationID: newID(),
				Connections: []versori.ActivationConnection{{TemplateID: newID(), ConnectionID: newID()}}}
			if i%2 == 1 {
				req.DynamicVariables = json.RawMessage(`{"n":` + fmt.Sprint(i) + `}`)
			}
			a, err := c.Activate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, a.ID)
			integrations = append(integrations, req.IntegrationID)
		}
		before := len(s.Calls())
		acts, err := c.ListUserActivations(ctx, user, "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range acts {
			got = append(got, a.ID)
			if a.HubID != s.HubID() {
				t.Errorf("activation %s has hub %s, want %s", a.ID, a.HubID, s.HubID())
			}
		}
		if !slices.Equal(got, ids) {
			t.Errorf("listed %v, want %v", got, ids)
		}
		if pages := len(s.Calls()) - before; pages != 3 {
			t.Errorf("listing 5 activations 2 a page took %d calls, want 3", pages)
		}

		found, err := c.FindActivation(ctx, user, integrations[3])
		if err != nil {
			t.Fatal(err)
		}
		if found == nil || found.ID != ids[3] || found.Integration.ID != integrations[3] {
			t.Errorf("FindActivation(%s) = %+v, want activation %s", integrations[3], found, ids[3])
		}
		if none, err := c.FindActivation(ctx, user, newID()); err != nil || none != nil {
			t.Errorf("FindActivation of an integration never activated = %+v, %v; want nil, nil", none, err)
		}

		a, err := c.GetActivation(ctx, ids[2])
		if err != nil {
			t.Fatal(err)
		}
		checkActivation(t, a, versori.Pair{UserID: user, IntegrationID: integrations[2]})
	})

	run("delete, then get and delete a deleted activation", func(t *testing.T) {
		req := versori.ActivationRequest{UserID: "user-delete", IntegrationID: newID()}
		a, err := c.Activate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteActivation(ctx, a.ID); err != nil {
			t.Fatalf("DeleteActivation: %v", err)
		}
		_, err = c.GetActivation(ctx, a.ID)
		apiError(t, err, http.StatusNotFound)
		apiError(t, c.DeleteActivation(ctx, a.ID), http.StatusNotFound)
	})

	run("create, get and conflict an end user", func(t *testing.T) {
		const user = "user-created@example.com"
		pc := noAuthConnection(newID())
		req := versori.EndUserCreate{ExternalID: user, DisplayName: "Created User", PrimaryConnection: &versori.ConnectionCreate{
			Name: pc.Name, Credentials: pc.Credentials, Variables: []versori.ConnectionVariable{{Name: "region", Value: "eu"}}}}
		u, err := c.CreateEndUser(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if u.ExternalID != user || u.HubID != s.HubID() || u.ID == "" {
			t.Errorf("created %+v", u)
		}
		got, err := c.GetEndUser(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != u.ID {
			t.Errorf("GetEndUser = %+v, want user %s", got, u.ID)
		}
		_, err = c.CreateEndUser(ctx, req)
		apiError(t, err, http.StatusConflict)
		_, err = c.GetEndUser(ctx, "user-never-created")
		apiError(t, err, http.StatusNotFound)
		// The spec allows an empty name; the stand-in, like an API that needs a name to show, does not.
		_, err = c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-unnamed", PrimaryConnection: &versori.ConnectionCreate{}})
		if ae := apiError(t, err, http.StatusBadRequest); len(ae.Fields) == 0 {
			t.Errorf("400 names no field: %v", ae)
		}
		// The smallest create: a connection without credentials or variables goes out as {} and [].
		if _, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-minimal",
			PrimaryConnection: &versori.ConnectionCreate{Name: "minimal"}}); err != nil {
			t.Error(err)
		}
	})

	run("update dynamic variables", func(t *testing.T) {
		req := versori.ActivationRequest{UserID: "user-variables", IntegrationID: newID(),
			DynamicVariables: json.RawMessage(`{"region":"eu"}`)}
		a, err := c.Activate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		vars, err := c.UpdateDynamicVariables(ctx, req.UserID, a.ID, json.RawMessage(`{"region":"us","batchSize":10,"tags":["a"]}`))
		if err != nil {
			t.Fatal(err)
		}
		if string(vars) != `{"region":"us","batchSize":10,"tags":["a"]}` {
			t.Errorf("variables = %s", vars)
		}
		if _, err := c.UpdateDynamicVariables(ctx, req.UserID, a.ID, nil); err != nil {
			t.Error(err)
		}
		_, err = c.UpdateDynamicVariables(ctx, req.UserID, newID(), json.RawMessage(`{}`))
		apiError(t, err, http.StatusNotFound)
	})

	run("scripted faults of the lifecycle writes", func(t *testing.T) {
		p := versori.Pair{UserID: "user-lifecycle-faults", IntegrationID: newID()}
		id := s.Seed(p)
		s.ScriptOp(versori.OpCreateEndUser, versori.Pair{UserID: p.UserID},
			versoritest.Fault{Status: http.StatusServiceUnavailable}, versoritest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "2"})
		s.ScriptOp(versori.OpUpdateVariables, p, versoritest.Fault{Status: http.StatusBadGateway, Commit: true})
		s.ScriptOp(versori.OpDeleteActivation, p, versoritest.Fault{Status: http.StatusGatewayTimeout, Commit: true})
		create := versori.EndUserCreate{ExternalID: p.UserID, PrimaryConnection: &versori.ConnectionCreate{Name: "p"}}
		// Seed made the user; the faults come first all the same, then the 409.
		_, err := c.CreateEndUser(ctx, create)
		apiError(t, err, http.StatusServiceUnavailable)
		_, err = c.CreateEndUser(ctx, create)
		apiError(t, err, http.StatusTooManyRequests)
		_, err = c.CreateEndUser(ctx, create)
		apiError(t, err, http.StatusConflict)
		_, err = c.UpdateDynamicVariables(ctx, p.UserID, id, json.RawMessage(`{"a":1}`))
		apiError(t, err, http.StatusBadGateway)
		apiError(t, c.DeleteActivation(ctx, id), http.StatusGatewayTimeout)
		apiError(t, c.DeleteActivation(ctx, id), http.StatusNotFound)
	})

	// The client does not list a hub's users, but the stand-in serves it: its pages are checked too.
	run("list end users", func(t *testing.T) {
		inner := http.DefaultTransport.(*http.Transport).Clone()
		t.Cleanup(inner.CloseIdleConnections)
		hc := &http.Client{Transport: &transport{v: v, auth: bearer(s.APIKey()), base: inner}}
		get := func(query string) map[string]any {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, base+"/hubs/"+s.HubID()+"/users"+query, nil)
			req.Header.Set("Authorization", "Bearer "+s.APIKey())
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var m map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("list%s = %d, %v", query, resp.StatusCode, err)
			}
			return m
		}
		for range 3 {
			s.AddUser("user-listed-" + newID())
		}
		page := get("?first=2&search=user-listed")
		next, _ := page["next"].(string)
		if next == "" {
			t.Fatalf("first page has no next: %v", page)
		}
		get("?first=2&search=user-listed&after=" + next)
	})

	run("missing connections", func(t *testing.T) {
		integration, required := newID(), newID()
		s.RequireConnection(integration, required)
		req := versori.ActivationRequest{UserID: "user-missing", IntegrationID: integration,
			Connections: []versori.ActivationConnection{noAuthConnection(newID())}}
		_, err := c.Activate(ctx, req)
		ae := apiError(t, err, http.StatusBadRequest)
		if len(ae.Fields) == 0 {
			t.Errorf("missing connections error names no field: %v", ae)
		}
		req.Connections = append(req.Connections, versori.ActivationConnection{TemplateID: required, ConnectionID: newID()})
		if _, err := c.Activate(ctx, req); err != nil {
			t.Errorf("with the required connection bound: %v", err)
		}
	})

	run("unknown end user", func(t *testing.T) {
		const user = "user-forgotten"
		s.ForgetUser(user)
		_, err := c.Activate(ctx, versori.ActivationRequest{UserID: user, IntegrationID: newID()})
		apiError(t, err, http.StatusNotFound)
		_, err = c.ListUserActivations(ctx, user, newID())
		apiError(t, err, http.StatusNotFound)
	})

	run("wrong API key", func(t *testing.T) {
		const badKey = "not-the-key"
		bad := newClient(t, v, base, s.HubID(), versori.APIKey(badKey), bearer(badKey))
		id := s.Seed(versori.Pair{UserID: "user-401", IntegrationID: newID()})
		_, err := bad.Activate(ctx, versori.ActivationRequest{UserID: "user-401", IntegrationID: newID()})
		apiError(t, err, http.StatusUnauthorized)
		_, err = bad.ListUserActivations(ctx, "user-401", "")
		apiError(t, err, http.StatusUnauthorized)
		_, err = bad.GetActivation(ctx, id)
		apiError(t, err, http.StatusUnauthorized)
		apiError(t, bad.DeleteActivation(ctx, id), http.StatusUnauthorized)
		_, err = bad.UpdateDynamicVariables(ctx, "user-401", id, json.RawMessage(`{}`))
		apiError(t, err, http.StatusUnauthorized)
		_, err = bad.GetEndUser(ctx, "user-401")
		apiError(t, err, http.StatusUnauthorized)
		_, err = bad.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-401-new", PrimaryConnection: &versori.ConnectionCreate{Name: "p"}})
		apiError(t, err, http.StatusUnauthorized)
	})

	run("scripted 503 and 429 with Retry-After", func(t *testing.T) {
		p := versori.Pair{UserID: "user-faults", IntegrationID: newID()}
		date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
		s.Script(p,
			versoritest.Fault{Status: http.StatusServiceUnavailable},
			versoritest.Fault{Status: http.StatusServiceUnavailable, Body: &versori.ErrorBody{
				Code: "503001", Message: "maintenance", Details: "the hub is being upgraded",
				Fields: []versori.ErrorField{{Field: "integrationId", Message: "temporarily unavailable"}}}},
			versoritest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "7"},
			versoritest.Fault{Status: http.StatusTooManyRequests, RetryAfter: date},
		)
		req := versori.ActivationRequest{UserID: p.UserID, IntegrationID: p.IntegrationID}
		for _, want := range []struct {
			status int
			after  time.Duration // 0: no Retry-After; <0: an HTTP-date in the future
		}{{503, 0}, {503, 0}, {429, 7 * time.Second}, {429, -1}} {
			_, err := c.Activate(ctx, req)
			ae := apiError(t, err, want.status)
			switch {
			case want.after == 0 && ae.HasRetryAfter:
				t.Errorf("HTTP %d carried Retry-After %s, none was scripted", want.status, ae.RetryAfter)
			case want.after > 0 && (!ae.HasRetryAfter || ae.RetryAfter != want.after):
				t.Errorf("HTTP %d Retry-After = %s (%v), want %s", want.status, ae.RetryAfter, ae.HasRetryAfter, want.after)
			case want.after < 0 && (!ae.HasRetryAfter || ae.RetryAfter <= 0 || ae.RetryAfter > 90*time.Second):
				t.Errorf("HTTP %d Retry-After date = %s (%v), want (0, 90s]", want.status, ae.RetryAfter, ae.HasRetryAfter)
			}
		}
		a, err := c.Activate(ctx, req)
		if err != nil {
			t.Fatalf("after the script ran out: %v", err)
		}
		checkActivated(t, a, p)
	})

	run("JWT end-user auth", func(t *testing.T) {
		auth, err := versori.NewJWTAuth(keyID, signingKey)
		if err != nil {
			t.Fatal(err)
		}
		jc := newClient(t, v, base, s.HubID(), auth, jwtAuth(keyID, &signingKey.PublicKey))
		const user = "user-jwt"
		req := versori.ActivationRequest{UserID: user, IntegrationID: newID(),
			Connections:      []versori.ActivationConnection{noAuthConnection(newID())},
			DynamicVariables: json.RawMessage(`{"x":1}`)}
		a, err := jc.Activate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		checkActivated(t, a, req.Pair())
		if found, err := jc.FindActivation(ctx, user, req.IntegrationID); err != nil || found == nil || found.ID != a.ID {
			t.Errorf("FindActivation = %+v, %v; want %s", found, err, a.ID)
		}
		uctx := versori.WithEndUser(ctx, user)
		if got, err := jc.GetActivation(uctx, a.ID); err != nil {
			t.Error(err)
		} else {
			checkActivation(t, got, req.Pair())
		}
		// Another user's token may not read this user's activation.
		_, err = jc.GetActivation(versori.WithEndUser(ctx, "someone-else"), a.ID)
		apiError(t, err, http.StatusForbidden)
		if _, err := jc.UpdateDynamicVariables(ctx, user, a.ID, json.RawMessage(`{"x":2}`)); err != nil {
			t.Error(err)
		}
		_, err = jc.UpdateDynamicVariables(ctx, "someone-else", a.ID, json.RawMessage(`{"x":3}`))
		apiError(t, err, http.StatusForbidden)
		if err := jc.DeleteActivation(uctx, a.ID); err != nil {
			t.Error(err)
		}
		const newUser = "user-jwt-created"
		if _, err := jc.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: newUser, PrimaryConnection: &versori.ConnectionCreate{Name: "p"}}); err != nil {
			t.Error(err)
		}
		if u, err := jc.GetEndUser(ctx, newUser); err != nil || u.ExternalID != newUser {
			t.Errorf("GetEndUser = %+v, %v", u, err)
		}
	})

	// Every operation of the client, and every kind of answer, went through the validator.
	t.Run("coverage", func(t *testing.T) {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, want := range []string{
			"ActivateIntegration 200", "ActivateIntegration 400", "ActivateIntegration 401",
			"ActivateIntegration 404", "ActivateIntegration 429", "ActivateIntegration 503",
			"ListEndUserActivations 200", "ListEndUserActivations 401", "ListEndUserActivations 404",
			"GetActivation 200", "GetActivation 401", "GetActivation 403", "GetActivation 404",
			"DeleteActivation 204", "DeleteActivation 401", "DeleteActivation 404", "DeleteActivation 504",
			"CreateEndUser 201", "CreateEndUser 400", "CreateEndUser 401", "CreateEndUser 409",
			"CreateEndUser 429", "CreateEndUser 503",
			"GetEndUser 200", "GetEndUser 401", "GetEndUser 404",
			"UpdateDynamicVariables 200", "UpdateDynamicVariables 401", "UpdateDynamicVariables 403",
			"UpdateDynamicVariables 404", "UpdateDynamicVariables 502", "ListEndUsers 200",
		} {
			if v.seen[want] == 0 {
				t.Errorf("no exchange %q was validated", want)
			}
		}
		n := 0
		for _, c := range v.seen {
			n += c
		}
		t.Logf("%d exchanges validated: %v", n, v.seen)
	})
}
