package check

// grafana/dashboard-linter's rules, in strict mode (warnings fail too), over
// deploy/grafana/dashboards/*.json. The linter's module is not served by the module proxy, so its
// rules are written out here from its source (github.com/grafana/dashboard-linter, lint/rule_*.go at
// commit 4d0844b40d49cbfd442916fc6c0c3c6fc81084e3), with the same PromQL parser it uses
// (github.com/prometheus/prometheus/promql/parser) and the same sample values for Grafana's variables.
// Each finding names its rule. Two rules of this project's own follow: every selector is scoped by
// namespace=~"$namespace" as well, and the job variable lists only activator's jobs (with "All"
// at .+, a shared Prometheus's every Go process would match).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

const dashboardsDir = "../grafana/dashboards"

type lintDashboard struct {
	Title      string `json:"title"`
	Editable   bool   `json:"editable"`
	Templating struct {
		List []lintTemplate `json:"list"`
	} `json:"templating"`
	Panels []lintPanel `json:"panels"`
}

type lintTemplate struct {
	Name       string          `json:"name"`
	Label      string          `json:"label"`
	Type       string          `json:"type"`
	RawQuery   json.RawMessage `json:"query"`
	Datasource json.RawMessage `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Refresh    int             `json:"refresh"`
	Current    struct {
		Value json.RawMessage `json:"value"`
	} `json:"current"`
}

// query is the variable's query: a string, or the "query" field of the object newer Grafana writes.
func (t lintTemplate) query() string {
	var s string
	if json.Unmarshal(t.RawQuery, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(t.RawQuery, &o)
	return o.Query
}

// current is the variable's current value, the first when there are several.
func (t lintTemplate) current() string {
	var s string
	if json.Unmarshal(t.Current.Value, &s) == nil {
		return s
	}
	var l []string
	if json.Unmarshal(t.Current.Value, &l) == nil && len(l) > 0 {
		return l[0]
	}
	return ""
}

type lintPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  json.RawMessage `json:"datasource"`
	Targets     []lintTarget    `json:"targets"`
	Panels      []lintPanel     `json:"panels"`
	Options     struct {
		ReduceOptions struct {
			Fields string `json:"fields"`
		} `json:"reduceOptions"`
	} `json:"options"`
	FieldConfig *struct {
		Defaults struct {
			Unit     string          `json:"unit"`
			Mappings json.RawMessage `json:"mappings"`
		} `json:"defaults"`
		Overrides []struct {
			Properties []struct {
				ID    string `json:"id"`
				Value any    `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
}

type lintTarget struct {
	RefID      string          `json:"refId"`
	Expr       string          `json:"expr"`
	Datasource json.RawMessage `json:"datasource"`
}

// datasourceUID reads a datasource reference: a bare string or {"type", "uid"}.
func datasourceUID(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		UID string `json:"uid"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.UID
}

// allPanels is the linter's GetPanels: every panel, rows' nested panels included.
func allPanels(ps []lintPanel) []lintPanel {
	var out []lintPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// The linter's sample values for Grafana's global variables (lint/variables.go): odd durations, so
// that a range of exactly rateIntervalSample is known to have been $__rate_interval.
var lintGlobals = map[string]string{
	"__rate_interval": "8869990787ms",
	"__interval":      "4867856611ms",
	"__interval_ms":   "7781188786",
	"__range_ms":      "6737667980",
	"__range_s":       "9397795485",
	"__range":         "6069770749ms",
	"__auto":          "12345ms",
}

var rateIntervalSample = func() time.Duration {
	d, err := time.ParseDuration(lintGlobals["__rate_interval"])
	if err != nil {
		panic(err)
	}
	return d
}()

var lintVariableRE = regexp.MustCompile(`\$([[:word:]]+)|\$\{([^}]+)\}|\[\[([^\[\]]+)\]\]`)

// expandVariables replaces Grafana variables outside double-quoted strings with sample values, as
// the linter does: globals by their sample, template variables by their current value, anything
// else by its name.
func expandVariables(expr string, vars []lintTemplate) string {
	parts := strings.Split(expr, `"`)
	for i := 0; i < len(parts); i += 2 {
		parts[i] = lintVariableRE.ReplaceAllStringFunc(parts[i], func(m string) string {
			sm := lintVariableRE.FindStringSubmatch(m)
			spec := sm[1] + sm[2] + sm[3]
			name, format, _ := strings.Cut(spec, ":")
			if v, ok := lintGlobals[name]; ok {
				return v
			}
			if strings.HasPrefix(name, "__auto_interval") {
				return "10s"
			}
			for _, v := range vars {
				if v.Name == name && v.current() != "" && !strings.HasPrefix(v.current(), "$") {
					return v.current()
				}
			}
			if format == "regex" || format == "pipe" {
				return name + "|" + name + "|" + name
			}
			return name
		})
	}
	return strings.Join(parts, `"`)
}

func parsePromQL(expr string, vars []lintTemplate) (parser.Expr, error) {
	return parser.NewParser(parser.Options{}).ParseExpr(expandVariables(expr, vars))
}

// inspector walks a PromQL tree with each node's ancestors.
type inspector func(parser.Node, []parser.Node) error

func (f inspector) Visit(n parser.Node, path []parser.Node) (parser.Visitor, error) {
	if err := f(n, path); err != nil {
		return nil, err
	}
	return f, nil
}

var lintValidUnits = strings.Fields(`none string short percent percentunit humidity dB hex0x hex sci locale
pixel accMS2 accFS2 accG degree radian grad arcmin arcsec areaM2 areaF2 areaMI2 flops mflops gflops
tflops pflops eflops zflops yflops ppm conppb conngm3 conngNm3 conμgm3 conμgNm3 conmgm3 conmgNm3
congm3 congNm3 conmgdL conmmolL bytes decbytes bits decbits kbytes deckbytes mbytes decmbytes gbytes
decgbytes tbytes dectbytes pbytes decpbytes pps binBps Bps binbps bps KiBs Kibits KBs Kbits MiBs
Mibits MBs Mbits GiBs Gibits GBs Gbits TiBs Tibits TBs Tbits PiBs Pibits PBs Pbits dateTimeAsIso
dateTimeAsIsoNoDateIfToday dateTimeAsUS dateTimeAsUSNoDateIfToday dateTimeAsLocal
dateTimeAsLocalNoDateIfToday dateTimeAsSystem dateTimeFromNow hertz ns µs ms s m h d dtdurationms
dtdurations dthms dtdhms timeticks clockms clocks cps ops reqps rps wps iops cpm opm rpm wpm mps mpm
bool bool_yes_no bool_on_off`)

// lintDashboardFindings returns every finding of the linter's rules in strict mode, each prefixed by
// its rule's name.
func lintDashboardFindings(d lintDashboard) []string {
	var out []string
	add := func(rule, format string, args ...any) {
		out = append(out, rule+": "+fmt.Sprintf(format, args...))
	}
	vars := d.Templating.List
	var dsVars []lintTemplate
	for _, v := range vars {
		if v.Type == "datasource" {
			dsVars = append(dsVars, v)
		}
	}
	prometheus := len(dsVars) > 0 && dsVars[0].query() == "prometheus"

	// template-datasource-rule
	if len(dsVars) == 0 {
		add("template-datasource-rule", "does not have a templated data source")
	}
	for _, v := range dsVars {
		uids := []string{strings.ToLower(v.query()) + "_datasource"}
		names := []string{strings.ToUpper(v.query()[:1]) + v.query()[1:] + " data source"}
		if len(dsVars) == 1 {
			uids, names = append(uids, "datasource"), append(names, "Data source")
		}
		if !slices.Contains(uids, v.Name) {
			add("template-datasource-rule", "templated data source variable named %q, should be named one of %q", v.Name, uids)
		}
		if !slices.Contains(names, v.Label) {
			add("template-datasource-rule", "(warning) templated data source variable labeled %q, should be labeled one of %q", v.Label, names)
		}
	}

	// template-job-rule, template-instance-rule
	if prometheus {
		for _, name := range []string{"job", "instance"} {
			rule := "template-" + name + "-rule"
			i := slices.IndexFunc(vars, func(v lintTemplate) bool { return v.Name == name })
			if i < 0 {
				add(rule, "is missing the %s template", name)
				continue
			}
			v := vars[i]
			if uid := datasourceUID(v.Datasource); !slices.Contains([]string{"$datasource", "${datasource}", "$prometheus_datasource", "${prometheus_datasource}"}, uid) {
				add(rule, "%s template should use datasource '$datasource', is currently %q", name, uid)
			}
			if v.Type != "query" {
				add(rule, "%s template should be a Prometheus query, is currently %q", name, v.Type)
			}
			if want := strings.ToUpper(name[:1]) + name[1:]; v.Label != want {
				add(rule, "(warning) %s template should be labeled %q, is currently %q", name, want, v.Label)
			}
			if !v.Multi {
				add(rule, "%s template should be a multi select", name)
			}
			if v.AllValue != ".+" {
				add(rule, "%s template allValue should be '.+', is currently %q", name, v.AllValue)
			}
		}
	}

	// template-label-promql-rule
	if prometheus {
		fnRE := regexp.MustCompile(`([a-z_]+)\((.+)\)`)
		for _, v := range vars {
			if v.Type != "query" {
				continue
			}
			m := fnRE.FindStringSubmatch(v.query())
			switch {
			case m == nil:
				add("template-label-promql-rule", "template %q invalid query %q", v.Name, v.query())
			case !slices.Contains([]string{"label_names", "label_values", "metrics", "query_result"}, m[1]):
				add("template-label-promql-rule", "template %q invalid function %q", v.Name, m[1])
			default:
				// label_values(SELECTOR, LABEL): the selector must parse (the linter lets a partial
				// parse pass; this is stricter).
				arg := m[2]
				if m[1] == "label_values" {
					if i := strings.LastIndex(arg, ","); i >= 0 {
						arg = arg[:i]
					}
				}
				if m[1] != "label_names" && m[1] != "metrics" {
					if _, err := parsePromQL(arg, vars); err != nil {
						add("template-label-promql-rule", "template %q invalid templated label %q: %v", v.Name, v.query(), err)
					}
				}
			}
		}
	}

	// template-on-time-change-reload-rule
	for _, v := range vars {
		if v.Type == "query" && v.Refresh != 2 {
			add("template-on-time-change-reload-rule", "variable %q should be refreshed on time range change (2), is %d", v.Name, v.Refresh)
		}
	}

	// uneditable-dashboard
	if d.Editable {
		add("uneditable-dashboard", "is editable, it should be set to 'editable: false'")
	}

	dsRefs := map[string]bool{}
	for _, v := range dsVars {
		dsRefs["$"+v.Name], dsRefs["${"+v.Name+"}"] = true, true
	}
	for _, p := range allPanels(d.Panels) {
		where := fmt.Sprintf("panel %q", p.Title)
		switch p.Type {
		case "singlestat", "graph", "table", "timeseries":
			// panel-datasource-rule
			if uid := datasourceUID(p.Datasource); !dsRefs[uid] {
				add("panel-datasource-rule", "%s does not use a templated datasource, uses %q", where, uid)
			}
		}
		switch p.Type {
		case "stat", "singlestat", "graph", "table", "timeseries", "gauge":
			// panel-title-description-rule
			if p.Title == "" || p.Description == "" {
				add("panel-title-description-rule", "%s has a missing title or description", where)
			}
			// panel-units-rule
			if !lintUnitsExempt(p) && !slices.Contains(lintValidUnits, lintUnit(p)) {
				add("panel-units-rule", "%s has no or invalid units defined: %q", where, lintUnit(p))
			}
			// panel-no-targets-rule
			if p.Targets == nil {
				add("panel-no-targets-rule", "%s has no targets", where)
			}
		}
		if !prometheus || !slices.Contains([]string{"singlestat", "gauge", "table", "stat", "state-timeline", "timeseries"}, p.Type) {
			continue
		}
		for _, t := range p.Targets {
			where := fmt.Sprintf("panel %q target %s", p.Title, t.RefID)
			// target-promql-rule
			expr, err := parsePromQL(t.Expr, vars)
			if err != nil {
				add("target-promql-rule", "%s: invalid PromQL query %q: %v", where, t.Expr, err)
				continue
			}
			// target-rate-interval-rule
			if err := parser.Walk(inspector(func(n parser.Node, parents []parser.Node) error {
				ms, ok := n.(*parser.MatrixSelector)
				if !ok || ms.Range == rateIntervalSample || len(parents) == 0 {
					return nil
				}
				if call, ok := parents[len(parents)-1].(*parser.Call); ok && (call.Func.Name == "rate" || call.Func.Name == "irate") {
					return fmt.Errorf("%s(...[%s]) should use $__rate_interval", call.Func.Name, ms.Range)
				}
				return nil
			}), expr, nil); err != nil {
				add("target-rate-interval-rule", "%s: %q: %v", where, t.Expr, err)
			}
			// target-job-rule, target-instance-rule, and this project's namespace rule
			for _, sel := range parser.ExtractSelectors(expr) {
				for _, name := range []string{"job", "instance", "namespace"} {
					rule := "target-" + name + "-rule"
					if name == "namespace" {
						rule = "activator-target-namespace-rule"
					}
					if err := lintCheckMatcher(sel, name, labels.MatchRegexp, "$"+name); err != nil {
						add(rule, "%s: %q: %v", where, t.Expr, err)
					}
				}
			}
			// target-counter-agg-rule
			if err := parser.Walk(inspector(func(n parser.Node, parents []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok || !strings.HasSuffix(vs.String(), "_total") {
					return nil
				}
				bad := fmt.Errorf("counter metric %q is not aggregated with rate, irate, or increase", vs.String())
				if len(parents) < 2 {
					return bad
				}
				if _, ok := parents[len(parents)-1].(*parser.MatrixSelector); !ok {
					return bad
				}
				call, ok := parents[len(parents)-2].(*parser.Call)
				if !ok || (call.Func.Name != "rate" && call.Func.Name != "irate" && call.Func.Name != "increase") {
					return bad
				}
				return nil
			}), expr, nil); err != nil {
				add("target-counter-agg-rule", "%s: %v", where, err)
			}
		}
	}
	return out
}

// lintCheckMatcher is the linter's checkForMatcher: the selector has name=~"value".
func lintCheckMatcher(sel []*labels.Matcher, name string, ty labels.MatchType, value string) error {
	err := fmt.Errorf("%s selector not found", name)
	for _, m := range sel {
		if m.Name != name {
			continue
		}
		if m.Type == ty && m.Value == value {
			return nil
		}
		err = fmt.Errorf("%s selector is %s, not %s%s", name, m, name, ty.String()+strconv.Quote(value))
	}
	return err
}

// lintUnit is the panel's unit: an override's, else the default's.
func lintUnit(p lintPanel) string {
	if p.FieldConfig == nil {
		return ""
	}
	for _, o := range p.FieldConfig.Overrides {
		for _, prop := range o.Properties {
			if s, ok := prop.Value.(string); ok && prop.ID == "unit" {
				return s
			}
		}
	}
	return p.FieldConfig.Defaults.Unit
}

// lintUnitsExempt: the units rule skips stat panels showing non-numeric fields and panels with value
// mappings.
func lintUnitsExempt(p lintPanel) bool {
	if p.Type == "stat" && p.Options.ReduceOptions.Fields != "" {
		return true
	}
	if p.FieldConfig == nil {
		return false
	}
	for _, o := range p.FieldConfig.Overrides {
		for _, prop := range o.Properties {
			if prop.ID == "mappings" && prop.Value != nil {
				return true
			}
		}
	}
	m := p.FieldConfig.Defaults.Mappings
	return len(m) > 0 && string(m) != "null"
}

func loadDashboard(t *testing.T, path string) lintDashboard {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d lintDashboard
	if err := json.Unmarshal(src, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// TestDashboardLint runs the rules over every dashboard and fails on any finding (strict mode), and
// checks the job variable offers only activator's jobs.
func TestDashboardLint(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards under %s (%v)", dashboardsDir, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := loadDashboard(t, f)
			findings := lintDashboardFindings(d)
			for _, msg := range findings {
				t.Error(msg)
			}
			t.Logf("%d findings", len(findings))

			// With "All" the job variable would be .+: every job's go_goroutines in a shared Prometheus.
			for _, v := range d.Templating.List {
				if v.Name != "job" {
					continue
				}
				if v.IncludeAll {
					t.Errorf("job variable offers All (%s): it would select every job of the Prometheus", v.AllValue)
				}
				if !regexp.MustCompile(`^label_values\(\s*activator_[a-z_]+[{,]`).MatchString(v.query()) {
					t.Errorf("job variable query %q: list the jobs that export an activator_ metric", v.query())
				}
				if v.current() != "activator-worker" {
					t.Errorf("job variable's default %q, want activator-worker (prometheus.yml's job)", v.current())
				}
			}
		})
	}
}

// TestDashboardLintRules: each rule finds what it is for.
func TestDashboardLintRules(t *testing.T) {
	good := func() lintDashboard {
		var d lintDashboard
		ds := json.RawMessage(`{"type":"prometheus","uid":"${datasource}"}`)
		d.Templating.List = []lintTemplate{
			{Name: "datasource", Label: "Data source", Type: "datasource", RawQuery: json.RawMessage(`"prometheus"`)},
			{Name: "job", Label: "Job", Type: "query", Datasource: ds, Multi: true, AllValue: ".+", Refresh: 2,
				RawQuery: json.RawMessage(`"label_values(activator_queue_paused, job)"`)},
			{Name: "instance", Label: "Instance", Type: "query", Datasource: ds, Multi: true, AllValue: ".+", Refresh: 2,
				RawQuery: json.RawMessage(`{"query": "label_values(activator_queue_paused{job=~\"$job\"}, instance)"}`)},
		}
		var p lintPanel
		p.Type, p.Title, p.Description, p.Datasource = "timeseries", "t", "d", ds
		p.FieldConfig = new(struct {
			Defaults struct {
				Unit     string          `json:"unit"`
				Mappings json.RawMessage `json:"mappings"`
			} `json:"defaults"`
			Overrides []struct {
				Properties []struct {
					ID    string `json:"id"`
					Value any    `json:"value"`
				} `json:"properties"`
			} `json:"overrides"`
		})
		p.FieldConfig.Defaults.Unit = "ops"
		p.Targets = []lintTarget{{RefID: "A", Expr: `sum by (namespace) (rate(x_total{job=~"$job", instance=~"$instance", namespace=~"$namespace"}[$__rate_interval]))`}}
		d.Panels = []lintPanel{{Type: "row", Title: "r", Panels: []lintPanel{p}}}
		return d
	}
	for _, tc := range []struct {
		name   string
		change func(*lintDashboard)
		rule   string
	}{
		{"clean", func(*lintDashboard) {}, ""},
		{"datasource variable misnamed", func(d *lintDashboard) { d.Templating.List[0].Name = "DS_PROMETHEUS" }, "template-datasource-rule"},
		{"datasource variable mislabeled (a warning)", func(d *lintDashboard) { d.Templating.List[0].Label = "DS" }, "template-datasource-rule"},
		{"no job variable", func(d *lintDashboard) { d.Templating.List = slices.Delete(d.Templating.List, 1, 2) }, "template-job-rule"},
		{"instance not multi", func(d *lintDashboard) { d.Templating.List[2].Multi = false }, "template-instance-rule"},
		{"job variable with a bad function", func(d *lintDashboard) { d.Templating.List[1].RawQuery = json.RawMessage(`"labels(up, job)"`) }, "template-label-promql-rule"},
		{"job variable not refreshed on time change", func(d *lintDashboard) { d.Templating.List[1].Refresh = 1 }, "template-on-time-change-reload-rule"},
		{"editable", func(d *lintDashboard) { d.Editable = true }, "uneditable-dashboard"},
		{"panel datasource literal", func(d *lintDashboard) { d.Panels[0].Panels[0].Datasource = json.RawMessage(`{"uid":"prometheus"}`) }, "panel-datasource-rule"},
		{"no description", func(d *lintDashboard) { d.Panels[0].Panels[0].Description = "" }, "panel-title-description-rule"},
		{"unknown unit", func(d *lintDashboard) { d.Panels[0].Panels[0].FieldConfig.Defaults.Unit = "jobs/s" }, "panel-units-rule"},
		{"no targets", func(d *lintDashboard) { d.Panels[0].Panels[0].Targets = nil }, "panel-no-targets-rule"},
		{"bad PromQL", func(d *lintDashboard) { d.Panels[0].Panels[0].Targets[0].Expr = "sum(rate(x[5m])" }, "target-promql-rule"},
		{"rate over 5m", func(d *lintDashboard) {
			d.Panels[0].Panels[0].Targets[0].Expr = `rate(x_total{job=~"$job", instance=~"$instance", namespace=~"$namespace"}[5m])`
		}, "target-rate-interval-rule"},
		{"no job matcher", func(d *lintDashboard) {
			d.Panels[0].Panels[0].Targets[0].Expr = `go_goroutines{instance=~"$instance", namespace=~"$namespace"}`
		}, "target-job-rule"},
		{"instance matched exactly", func(d *lintDashboard) {
			d.Panels[0].Panels[0].Targets[0].Expr = `go_goroutines{job=~"$job", instance="$instance", namespace=~"$namespace"}`
		}, "target-instance-rule"},
		{"no namespace matcher", func(d *lintDashboard) {
			d.Panels[0].Panels[0].Targets[0].Expr = `go_goroutines{job=~"$job", instance=~"$instance"}`
		}, "activator-target-namespace-rule"},
		{"a bare counter", func(d *lintDashboard) { d.Panels[0].Panels[0].Targets[0].Expr = `sum(x_total)` }, "target-counter-agg-rule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good()
			tc.change(&d)
			got := lintDashboardFindings(d)
			if tc.rule == "" {
				if len(got) > 0 {
					t.Errorf("findings on a clean dashboard: %q", got)
				}
				return
			}
			if !slices.ContainsFunc(got, func(f string) bool { return strings.HasPrefix(f, tc.rule+": ") }) {
				t.Errorf("no %s finding; got %q", tc.rule, got)
			}
		})
	}
}
