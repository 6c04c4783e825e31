package deploy_test

// The Grafana dashboard and its provisioning. The dashboard is only useful if every series it asks
// for exists: TestGrafanaDashboardMetricsExported extracts the metric names from every PromQL
// expression (panels, rows' nested panels, template variables) and checks each against what a worker
// registers. Identifiers here start with grafana/Grafana: other tests share package deploy_test.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.yaml.in/yaml/v4"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/versori"
)

var (
	grafanaDashboardFile   = filepath.Join("grafana", "dashboards", "activator.json")
	grafanaDatasourceFile  = filepath.Join("grafana", "provisioning", "datasources", "prometheus.yml")
	grafanaDashboardsFile  = filepath.Join("grafana", "provisioning", "dashboards", "activator.yml")
	grafanaWorkerScrapeJob = "activator-worker"
)

// ---------------------------------------------------------------------------------------------------
// Dashboard model: only the fields the tests read.

type grafanaDashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []grafanaVariable `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	ID          *int               `json:"id"`
	Type        string             `json:"type"`
	Title       string             `json:"title"`
	Description string             `json:"description"`
	Datasource  *grafanaDatasource `json:"datasource"`
	Collapsed   bool               `json:"collapsed"`
	GridPos     *grafanaGridPos    `json:"gridPos"`
	Targets     []grafanaTarget    `json:"targets"`
	Panels      []grafanaPanel     `json:"panels"`
	FieldConfig grafanaFieldConfig `json:"fieldConfig"`
}

type grafanaGridPos struct {
	H, W, X, Y int
}

type grafanaFieldConfig struct {
	Defaults struct {
		Unit string `json:"unit"`
	} `json:"defaults"`
}

type grafanaTarget struct {
	RefID      string             `json:"refId"`
	Expr       string             `json:"expr"`
	Datasource *grafanaDatasource `json:"datasource"`
}

// grafanaDatasource is a datasource reference: {"type": ..., "uid": ...}, or the older bare string
// (a name, uid or variable), kept in UID.
type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func (d *grafanaDatasource) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		d.UID = s
		return nil
	}
	type plain grafanaDatasource
	return json.Unmarshal(b, (*plain)(d))
}

type grafanaVariable struct {
	Name       string             `json:"name"`
	Type       string             `json:"type"`
	Datasource *grafanaDatasource `json:"datasource"`
	Definition string             `json:"definition"`
	IncludeAll bool               `json:"includeAll"`
	// Query is a string for datasource variables (the plugin type), and a string or an object with a
	// "query" field for query variables.
	Query   json.RawMessage `json:"query"`
	Current struct {
		Value json.RawMessage `json:"value"`
	} `json:"current"`
}

// queryText is the variable's query as text.
func (v grafanaVariable) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &o) == nil {
		return o.Query
	}
	return ""
}

// currentValue is the variable's current value when it is a single string.
func (v grafanaVariable) currentValue() string {
	var s string
	if json.Unmarshal(v.Current.Value, &s) == nil {
		return s
	}
	return ""
}

func grafanaLoadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	raw, err := os.ReadFile(grafanaDashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", grafanaDashboardFile, err)
	}
	if dec.More() {
		t.Fatalf("%s: trailing data after the dashboard object", grafanaDashboardFile)
	}
	return d
}

// grafanaAllPanels flattens the dashboard: top-level panels, and the panels collapsed rows hold.
func grafanaAllPanels(ps []grafanaPanel) []grafanaPanel {
	var out []grafanaPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, grafanaAllPanels(p.Panels)...)
	}
	return out
}

// grafanaExpr is one PromQL expression the dashboard runs, and where it is.
type grafanaExpr struct {
	where string
	expr  string
}

// grafanaExprs collects every PromQL expression in the dashboard: each panel target's expr, and the
// metric selector of each query variable. It fails t on a variable query it cannot read.
func grafanaExprs(t *testing.T, d grafanaDashboard) []grafanaExpr {
	t.Helper()
	var out []grafanaExpr
	for _, p := range grafanaAllPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, grafanaExpr{where: fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		expr, err := grafanaVariableExpr(v.queryText())
		if err != nil {
			t.Errorf("variable %q: %v", v.Name, err)
			continue
		}
		if expr != "" {
			out = append(out, grafanaExpr{where: fmt.Sprintf("variable %q", v.Name), expr: expr})
		}
	}
	return out
}

var (
	grafanaLabelValuesRE = regexp.MustCompile(`^label_values\(\s*(.*?)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$`)
	grafanaLabelNamesRE  = regexp.MustCompile(`^label_(?:values|names)\(\s*[a-zA-Z_]*\s*\)$`)
	grafanaQueryResultRE = regexp.MustCompile(`^query_result\((.*)\)$`)
)

// grafanaVariableExpr is the PromQL inside a Prometheus template variable query (Grafana's
// label_values(selector, label), query_result(expr), ...), or "" when it names no metric.
func grafanaVariableExpr(q string) (string, error) {
	q = strings.TrimSpace(q)
	if m := grafanaLabelValuesRE.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if grafanaLabelNamesRE.MatchString(q) {
		return "", nil
	}
	if m := grafanaQueryResultRE.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	return "", fmt.Errorf("query %q: not a label_values(...) or query_result(...) query this test can check", q)
}

// ---------------------------------------------------------------------------------------------------
// A PromQL tokenizer, enough to find the metric names an expression selects and the functions around
// each. It does not parse PromQL; it finds names: identifiers that are not functions, aggregations,
// keywords, label names (in {...} or by/without/on/ignoring/group_left/group_right lists), numbers or
// durations, plus a metric named by a quoted name or a __name__="..." matcher inside {...}. Grafana
// variables ($x, ${x}, [[x]]) are skipped.

// grafanaMetricRef is one metric an expression selects, with the functions and aggregations that
// enclose it, outermost first.
type grafanaMetricRef struct {
	Name  string
	Funcs []string
}

var grafanaPromQLAggregations = grafanaSet(
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
	"quantile", "limitk", "limit_ratio",
)

var grafanaPromQLFunctions = grafanaSet(
	"abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
	"avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
	"count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "delta",
	"deriv", "double_exponential_smoothing", "exp", "first_over_time", "floor", "histogram_avg",
	"histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
	"histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info", "irate",
	"label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time",
	"max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
	"quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
	"sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
	"sum_over_time", "tan", "tanh", "time", "timestamp", "ts_of_first_over_time",
	"ts_of_last_over_time", "ts_of_max_over_time", "ts_of_min_over_time", "vector", "year",
	// The @ modifier's preprocessors: x @ start().
	"start", "end",
)

// grafanaPromQLLabelLists are the keywords followed by a parenthesised list of label names.
var grafanaPromQLLabelLists = grafanaSet("by", "without", "on", "ignoring", "group_left", "group_right")

// grafanaPromQLKeywords are the other words that are never metric names (matched case-insensitively,
// as PromQL does).
var grafanaPromQLKeywords = grafanaSet("and", "or", "unless", "atan2", "offset", "bool", "inf", "nan",
	"anchored", "smoothed")

// grafanaRangeFuncs take a range vector; grafanaCounterFuncs make sense only over counters (a gauge
// going down reads as a counter reset), grafanaGaugeFuncs only over gauges.
var (
	grafanaRangeFuncs = grafanaSet("rate", "irate", "increase", "resets", "delta", "idelta", "deriv",
		"predict_linear", "changes", "holt_winters", "double_exponential_smoothing", "absent_over_time",
		"avg_over_time", "count_over_time", "first_over_time", "last_over_time", "mad_over_time",
		"max_over_time", "min_over_time", "present_over_time", "quantile_over_time", "stddev_over_time",
		"stdvar_over_time", "sum_over_time", "ts_of_first_over_time", "ts_of_last_over_time",
		"ts_of_max_over_time", "ts_of_min_over_time")
	grafanaCounterFuncs = grafanaSet("rate", "irate", "increase", "resets")
	grafanaGaugeFuncs   = grafanaSet("delta", "idelta", "deriv", "predict_linear", "holt_winters",
		"double_exponential_smoothing")
)

func grafanaSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func grafanaIsIdentStart(c byte) bool {
	return c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func grafanaIsIdentChar(c byte) bool { return grafanaIsIdentStart(c) || ('0' <= c && c <= '9') }

func grafanaIsDigit(c byte) bool { return '0' <= c && c <= '9' }

func grafanaIsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// grafanaPromQLScanner walks one expression.
type grafanaPromQLScanner struct {
	s     string
	i     int
	stack []string // one entry per open parenthesis: the function or aggregation, or "" for grouping
	refs  []grafanaMetricRef
}

func (p *grafanaPromQLScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *grafanaPromQLScanner) skipSpace() {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case grafanaIsSpace(c):
			p.i++
		case c == '#': // a comment runs to the end of the line
			for p.i < len(p.s) && p.s[p.i] != '\n' {
				p.i++
			}
		default:
			return
		}
	}
}

// peek is the next byte after spaces and comments, or 0 at the end.
func (p *grafanaPromQLScanner) peek() byte {
	p.skipSpace()
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *grafanaPromQLScanner) ident() string {
	start := p.i
	for p.i < len(p.s) && grafanaIsIdentChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// str reads a quoted string at p.i and returns its contents (escapes resolved for " and ').
func (p *grafanaPromQLScanner) str() (string, error) {
	q := p.s[p.i]
	start := p.i
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == q:
			p.i++
			return b.String(), nil
		case c == '\\' && q != '`' && p.i+1 < len(p.s):
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	p.i = start
	return "", p.errorf("unterminated string")
}

// number reads a number or duration: 5, 0.5, .5, 1e-3, 0x1f, 5m, 1h30m.
func (p *grafanaPromQLScanner) number() {
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if grafanaIsIdentChar(c) && c != ':' || c == '.' {
			p.i++
			continue
		}
		tok := strings.ToLower(p.s[start:p.i])
		if (c == '+' || c == '-') && strings.HasSuffix(tok, "e") && !strings.HasPrefix(tok, "0x") {
			p.i++
			continue
		}
		return
	}
}

// variable skips a Grafana variable: $name, ${name}, ${name:format}.
func (p *grafanaPromQLScanner) variable() error {
	p.i++ // $
	if p.i < len(p.s) && p.s[p.i] == '{' {
		end := strings.IndexByte(p.s[p.i:], '}')
		if end < 0 {
			return p.errorf("unterminated ${...} variable")
		}
		p.i += end + 1
		return nil
	}
	if p.ident() == "" {
		return p.errorf("$ without a variable name")
	}
	return nil
}

// brackets skips a range or subquery, [5m] or [1h:5m] or [$__rate_interval], and Grafana's [[var]].
func (p *grafanaPromQLScanner) brackets() error {
	start := p.i
	depth := 0
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 {
				p.i++
				return nil
			}
		}
		p.i++
	}
	p.i = start
	return p.errorf("unterminated [")
}

// labelList skips a parenthesised list of label names after by, without, on, ignoring, group_left
// or group_right.
func (p *grafanaPromQLScanner) labelList(kw string) error {
	p.i++ // (
	for {
		switch c := p.peek(); {
		case c == ')':
			p.i++
			return nil
		case c == ',':
			p.i++
		case c == '"' || c == '\'' || c == '`':
			if _, err := p.str(); err != nil {
				return err
			}
		case grafanaIsIdentStart(c):
			p.ident()
		case c == 0:
			return p.errorf("unterminated %s (...)", kw)
		default:
			return p.errorf("unexpected %q in %s (...)", c, kw)
		}
	}
}

func (p *grafanaPromQLScanner) addRef(name string) {
	p.refs = append(p.refs, grafanaMetricRef{Name: name, Funcs: slices.Clone(p.stack)})
}

// matchers reads a {...} selector body. Label names and values are not metrics, except the value
// of a __name__="..." matcher and a quoted metric name standing alone ({"my.metric", job="x"}).
func (p *grafanaPromQLScanner) matchers() error {
	p.i++ // {
	for {
		c := p.peek()
		switch {
		case c == '}':
			p.i++
			return nil
		case c == ',':
			p.i++
			continue
		case c == 0:
			return p.errorf("unterminated {")
		}
		var label string
		quoted := false
		switch {
		case c == '"' || c == '\'' || c == '`':
			s, err := p.str()
			if err != nil {
				return err
			}
			label, quoted = s, true
		case grafanaIsIdentStart(c):
			label = p.ident()
		default:
			return p.errorf("unexpected %q in {...}", c)
		}
		if n := p.peek(); quoted && (n == ',' || n == '}') {
			p.addRef(label) // a quoted metric name
			continue
		}
		var op string
		for _, o := range []string{"=~", "!~", "!=", "="} {
			if strings.HasPrefix(p.s[p.i:], o) {
				op = o
				break
			}
		}
		if op == "" {
			return p.errorf("label %q without a matcher operator", label)
		}
		p.i += len(op)
		var value string
		switch n := p.peek(); {
		case n == '"' || n == '\'' || n == '`':
			s, err := p.str()
			if err != nil {
				return err
			}
			value = s
		default:
			return p.errorf("label %q: value is not a string", label)
		}
		if label == "__name__" {
			if op != "=" {
				return p.errorf("__name__%s%q selects metrics by pattern; their names cannot be checked", op, value)
			}
			p.addRef(value)
		}
	}
}

// grafanaMetricRefs returns the metrics an expression selects, in order of appearance.
func grafanaMetricRefs(expr string) ([]grafanaMetricRef, error) {
	p := &grafanaPromQLScanner{s: expr}
	pending := "" // an aggregation waiting for its "(" after a by/without clause
	for {
		c := p.peek()
		if c == 0 {
			break
		}
		switch {
		case c == '"' || c == '\'' || c == '`':
			if _, err := p.str(); err != nil {
				return nil, err
			}
		case grafanaIsDigit(c) || (c == '.' && p.i+1 < len(p.s) && grafanaIsDigit(p.s[p.i+1])):
			p.number()
		case c == '$':
			if err := p.variable(); err != nil {
				return nil, err
			}
		case c == '[':
			if err := p.brackets(); err != nil {
				return nil, err
			}
		case c == '{':
			if err := p.matchers(); err != nil {
				return nil, err
			}
		case c == '(':
			p.stack = append(p.stack, pending)
			pending = ""
			p.i++
		case c == ')':
			if len(p.stack) == 0 {
				return nil, p.errorf("unbalanced )")
			}
			p.stack = p.stack[:len(p.stack)-1]
			p.i++
		case grafanaIsIdentStart(c):
			start := p.i
			word := p.ident()
			lower := strings.ToLower(word)
			next := p.peek()
			switch {
			case grafanaPromQLLabelLists[lower]:
				if next == '(' {
					if err := p.labelList(lower); err != nil {
						return nil, err
					}
				} else if lower != "group_left" && lower != "group_right" {
					return nil, p.errorf("%s without a label list", word)
				}
			case grafanaPromQLKeywords[lower]:
			case grafanaPromQLAggregations[lower]:
				if next == '(' {
					pending = lower
					break
				}
				save := p.i
				if kw := strings.ToLower(p.ident()); kw == "by" || kw == "without" {
					p.i = save // the clause is skipped as a label list on the next round
					pending = lower
					break
				}
				p.i = start
				return nil, p.errorf("aggregation %s without (", word)
			case next == '(':
				if !grafanaPromQLFunctions[word] {
					p.i = start
					return nil, p.errorf("unknown function %s", word)
				}
				pending = word
			default:
				p.addRef(word)
			}
		default:
			// Operators (+ - * / % ^ == != <= >= < > @ ,) and anything else: not names.
			p.i++
		}
	}
	if len(p.stack) > 0 {
		return nil, p.errorf("unbalanced (: %d not closed", len(p.stack))
	}
	if pending != "" {
		return nil, p.errorf("%s without (", pending)
	}
	return p.refs, nil
}

// grafanaRangeFunc is the innermost range function around a metric, the one its samples go through
// first, or "".
func grafanaRangeFunc(r grafanaMetricRef) string {
	for i := len(r.Funcs) - 1; i >= 0; i-- {
		if grafanaRangeFuncs[r.Funcs[i]] {
			return r.Funcs[i]
		}
	}
	return ""
}

func TestGrafanaPromQLMetricRefs(t *testing.T) {
	type ref = grafanaMetricRef
	for _, tc := range []struct {
		expr    string
		want    []ref
		wantErr string
	}{
		{expr: "up", want: []ref{{"up", nil}}},
		{expr: `sum(up{job="activator-worker"}) or vector(0)`, want: []ref{{"up", []string{"sum"}}}},
		{expr: `sum by (result) (rate(activator_activations_total[5m]))`,
			want: []ref{{"activator_activations_total", []string{"sum", "rate"}}}},
		{expr: `SUM BY (result) (rate(a_total[5m]))`, want: []ref{{"a_total", []string{"sum", "rate"}}}},
		{expr: `sum(rate(a_total[5m])) without (instance, "quoted.label")`,
			want: []ref{{"a_total", []string{"sum", "rate"}}}},
		{expr: `histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket{class=~"ok|transient"}[$__rate_interval])))`,
			want: []ref{{"h_seconds_bucket", []string{"histogram_quantile", "sum", "rate"}}}},
		// Label names and values, and durations, are not metrics; recording-rule names with colons are.
		{expr: `job:requests:rate5m{le="0.5", code!="429", instance!~"x.*"} offset 1h30m`,
			want: []ref{{"job:requests:rate5m", nil}}},
		{expr: `a / on (instance) group_left (version) b * ignoring (code) group_right c`,
			want: []ref{{"a", nil}, {"b", nil}, {"c", nil}}},
		{expr: `a / on(instance) group_left b`, want: []ref{{"a", nil}, {"b", nil}}},
		{expr: `a and b unless c or d > bool 5 atan2 e`,
			want: []ref{{"a", nil}, {"b", nil}, {"c", nil}, {"d", nil}, {"e", nil}}},
		{expr: `1e-3 * 0x1F + .5 + 2.5E+2 - Inf + NaN`, want: nil},
		{expr: `max_over_time(rate(c_total[5m])[1h:30s] @ end())`,
			want: []ref{{"c_total", []string{"max_over_time", "rate"}}}},
		{expr: `label_replace(up, "dst", "$1 {x} (y) rate(z)", "instance", "(.*):.*")`,
			want: []ref{{"up", []string{"label_replace"}}}},
		{expr: `count_values("version", build_info) # a comment naming not_a_metric`,
			want: []ref{{"build_info", []string{"count_values"}}}},
		{expr: `topk(5, x) + quantile($q, y) + z{queue=~"$queue"} + w{a="${v:regex}"}`,
			want: []ref{{"x", []string{"topk"}}, {"y", []string{"quantile"}}, {"z", nil}, {"w", nil}}},
		{expr: `{__name__="by_name", job="j"} + {"quoted.name", job="j"}`,
			want: []ref{{"by_name", nil}, {"quoted.name", nil}}},
		{expr: `rate(x[[[interval]]])`, want: []ref{{"x", []string{"rate"}}}},
		// A metric may be named like a function when it is not called.
		{expr: `rate + time()`, want: []ref{{"rate", nil}}},
		{expr: "sum(\n  rate(x[5m])\n)\nby (le)", want: []ref{{"x", []string{"sum", "rate"}}}},

		{expr: `hist_quantile(0.5, x)`, wantErr: "unknown function hist_quantile"},
		{expr: `sum(rate(x[5m])`, wantErr: "unbalanced ("},
		{expr: `sum(x))`, wantErr: "unbalanced )"},
		{expr: `x{job="a}`, wantErr: "unterminated string"},
		{expr: `x{job="a"`, wantErr: "unterminated {"},
		{expr: `x{job}`, wantErr: "without a matcher operator"},
		{expr: `{__name__=~"activator_.*"}`, wantErr: "cannot be checked"},
		{expr: `sum x`, wantErr: "aggregation sum without ("},
		{expr: `sum by (le) x`, wantErr: "sum without ("},
		{expr: `rate(x[5m)`, wantErr: "unterminated ["},
		{expr: `sum by le (x)`, wantErr: "by without a label list"},
	} {
		got, err := grafanaMetricRefs(tc.expr)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("grafanaMetricRefs(%q) = %v, %v; want an error containing %q", tc.expr, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("grafanaMetricRefs(%q): %v", tc.expr, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("grafanaMetricRefs(%q)\n got %v\nwant %v", tc.expr, got, tc.want)
		}
	}
}

func TestGrafanaVariableExpr(t *testing.T) {
	for _, tc := range []struct{ q, want, wantErr string }{
		{q: "label_values(asynq_tasks_enqueued_total, queue)", want: "asynq_tasks_enqueued_total"},
		{q: `label_values(up{job="activator-worker"},instance)`, want: `up{job="activator-worker"}`},
		{q: "label_values(queue)"},
		{q: "query_result(max by (queue) (asynq_queue_size))", want: "max by (queue) (asynq_queue_size)"},
		{q: "metrics(activator_.*)", wantErr: "not a label_values(...) or query_result(...) query"},
	} {
		got, err := grafanaVariableExpr(tc.q)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("grafanaVariableExpr(%q) = %q, %v; want an error containing %q", tc.q, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("grafanaVariableExpr(%q) = %q, %v; want %q", tc.q, got, err, tc.want)
		}
	}
}

func TestGrafanaRangeFunc(t *testing.T) {
	for _, tc := range []struct {
		funcs []string
		want  string
	}{
		{nil, ""},
		{[]string{"sum"}, ""},
		{[]string{"histogram_quantile", "sum", "rate"}, "rate"},
		{[]string{"delta", "rate"}, "rate"}, // delta over a subquery of rate(): the counter meets rate first
		{[]string{"max_over_time", "sum"}, "max_over_time"},
	} {
		if got := grafanaRangeFunc(grafanaMetricRef{Name: "x", Funcs: tc.funcs}); got != tc.want {
			t.Errorf("grafanaRangeFunc(%v) = %q, want %q", tc.funcs, got, tc.want)
		}
	}
}

// ---------------------------------------------------------------------------------------------------
// Provisioning.

type grafanaDatasourceProvisioning struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name      string         `yaml:"name"`
		Type      string         `yaml:"type"`
		UID       string         `yaml:"uid"`
		Access    string         `yaml:"access"`
		URL       string         `yaml:"url"`
		IsDefault bool           `yaml:"isDefault"`
		Editable  bool           `yaml:"editable"`
		JSONData  map[string]any `yaml:"jsonData"`
	} `yaml:"datasources"`
}

type grafanaDashboardProvisioning struct {
	APIVersion int `yaml:"apiVersion"`
	Providers  []struct {
		Name                  string `yaml:"name"`
		OrgID                 int    `yaml:"orgId"`
		Folder                string `yaml:"folder"`
		Type                  string `yaml:"type"`
		DisableDeletion       bool   `yaml:"disableDeletion"`
		AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
		UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
		Options               struct {
			Path                      string `yaml:"path"`
			FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// grafanaLoadYAML decodes file into out, refusing keys out does not know (a misspelt key is ignored
// by Grafana, silently).
func grafanaLoadYAML(t *testing.T, file string, out any) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Load(raw, out, yaml.WithKnownFields()); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// grafanaProvisionedUID is the uid of the provisioned Prometheus datasource.
func grafanaProvisionedUID(t *testing.T) string {
	t.Helper()
	var ds grafanaDatasourceProvisioning
	grafanaLoadYAML(t, grafanaDatasourceFile, &ds)
	if len(ds.Datasources) != 1 {
		t.Fatalf("%s: %d datasources, want 1", grafanaDatasourceFile, len(ds.Datasources))
	}
	if ds.Datasources[0].UID == "" {
		t.Fatalf("%s: the datasource has no uid; the dashboard refers to it by uid", grafanaDatasourceFile)
	}
	return ds.Datasources[0].UID
}

func TestGrafanaProvisioning(t *testing.T) {
	var ds grafanaDatasourceProvisioning
	grafanaLoadYAML(t, grafanaDatasourceFile, &ds)
	if ds.APIVersion != 1 {
		t.Errorf("%s: apiVersion %d, want 1", grafanaDatasourceFile, ds.APIVersion)
	}
	if len(ds.Datasources) != 1 {
		t.Fatalf("%s: %d datasources, want 1", grafanaDatasourceFile, len(ds.Datasources))
	}
	d := ds.Datasources[0]
	if d.Type != "prometheus" || d.URL != "http://prometheus:9090" || d.Access != "proxy" || d.Name == "" || d.UID == "" {
		t.Errorf("%s: datasource %+v; want a named prometheus datasource with a uid, access proxy, url http://prometheus:9090",
			grafanaDatasourceFile, d)
	}

	var dp grafanaDashboardProvisioning
	grafanaLoadYAML(t, grafanaDashboardsFile, &dp)
	if dp.APIVersion != 1 {
		t.Errorf("%s: apiVersion %d, want 1", grafanaDashboardsFile, dp.APIVersion)
	}
	if len(dp.Providers) != 1 {
		t.Fatalf("%s: %d providers, want 1", grafanaDashboardsFile, len(dp.Providers))
	}
	p := dp.Providers[0]
	if p.Type != "file" || p.Name == "" {
		t.Errorf("%s: provider %+v; want a named file provider", grafanaDashboardsFile, p)
	}
	if want := "/var/lib/grafana/dashboards"; p.Options.Path != want {
		t.Errorf("%s: options.path %q, want %q (where the compose file mounts deploy/grafana/dashboards)",
			grafanaDashboardsFile, p.Options.Path, want)
	}

	// The uid the dashboard selects by default is the provisioned one.
	uid := grafanaProvisionedUID(t)
	dash := grafanaLoadDashboard(t)
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" {
			if got := v.currentValue(); got != uid {
				t.Errorf("dashboard variable %q selects datasource %q by default; the provisioned datasource's uid is %q",
					v.Name, got, uid)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------------
// The dashboard's structure.

// grafanaResolveDatasource is the uid a panel's or target's datasource reference selects: a literal
// uid, or the default of the datasource variable it names. It reports whether the reference is
// usable, with a reason when not.
func grafanaResolveDatasource(ref *grafanaDatasource, vars []grafanaVariable) (string, string) {
	if ref == nil || ref.UID == "" {
		return "", "no datasource"
	}
	if ref.Type != "" && ref.Type != "prometheus" {
		return "", fmt.Sprintf("datasource type %q, want prometheus", ref.Type)
	}
	name, isVar := "", false
	switch u := ref.UID; {
	case strings.HasPrefix(u, "${") && strings.HasSuffix(u, "}"):
		name, isVar = strings.TrimSuffix(strings.TrimPrefix(u, "${"), "}"), true
	case strings.HasPrefix(u, "$"):
		name, isVar = strings.TrimPrefix(u, "$"), true
	}
	if !isVar {
		return ref.UID, ""
	}
	for _, v := range vars {
		if v.Name == name {
			if v.Type != "datasource" || v.queryText() != "prometheus" {
				return "", fmt.Sprintf("variable %q is not a prometheus datasource variable", name)
			}
			return v.currentValue(), ""
		}
	}
	return "", fmt.Sprintf("datasource variable %q is not defined in templating", name)
}

func TestGrafanaDashboardStructure(t *testing.T) {
	d := grafanaLoadDashboard(t)
	uid := grafanaProvisionedUID(t)
	if d.UID != "activator" {
		t.Errorf("dashboard uid %q, want activator (links and provisioning rely on it)", d.UID)
	}
	if d.Title == "" {
		t.Error("dashboard has no title")
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: datasource references by uid need 36 or later", d.SchemaVersion)
	}
	var queue *grafanaVariable
	for i, v := range d.Templating.List {
		if v.Name == "queue" {
			queue = &d.Templating.List[i]
		}
		if v.Type == "query" {
			if _, why := grafanaResolveDatasource(v.Datasource, d.Templating.List); why != "" {
				t.Errorf("variable %q: %s", v.Name, why)
			}
		}
	}
	if queue == nil || queue.Type != "query" {
		t.Error("no query variable named queue")
	}

	ids := map[int]string{}
	titles := map[string]bool{}
	all := grafanaAllPanels(d.Panels)
	if len(all) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	nested := 0
	for _, p := range d.Panels {
		nested += len(p.Panels)
		if p.Type == "row" && !p.Collapsed && len(p.Panels) > 0 {
			t.Errorf("row %q is open but holds %d panels: Grafana shows only a collapsed row's panels", p.Title, len(p.Panels))
		}
	}
	for _, p := range all {
		name := fmt.Sprintf("panel %q", p.Title)
		if p.Title == "" {
			name = "a panel without a title"
			if p.ID != nil {
				name = fmt.Sprintf("panel id %d", *p.ID)
			}
			t.Errorf("%s (%s) has no title", name, p.Type)
		}
		switch {
		case p.ID == nil:
			t.Errorf("%s has no id", name)
		case ids[*p.ID] != "":
			t.Errorf("%s has id %d, already used by %s", name, *p.ID, ids[*p.ID])
		default:
			ids[*p.ID] = name
		}
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: gridPos %+v does not fit the 24-column grid", name, p.GridPos)
		}
		if p.Title != "" && p.Type != "row" {
			if titles[p.Title] {
				t.Errorf("two panels titled %q", p.Title)
			}
			titles[p.Title] = true
		}
		if p.Type == "row" {
			if len(p.Targets) > 0 {
				t.Errorf("%s: a row with queries", name)
			}
			continue
		}
		if len(p.Panels) > 0 {
			t.Errorf("%s: a %s panel holding panels", name, p.Type)
		}
		if p.Type != "timeseries" && p.Type != "stat" {
			t.Errorf("%s: type %q, want timeseries or stat", name, p.Type)
		}
		if strings.TrimSpace(p.Description) == "" {
			t.Errorf("%s has no description saying how to read it", name)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("%s has no unit", name)
		}
		if got, why := grafanaResolveDatasource(p.Datasource, d.Templating.List); why != "" {
			t.Errorf("%s: %s", name, why)
		} else if got != uid {
			t.Errorf("%s: datasource uid %q, want the provisioned %q", name, got, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no queries", name)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refIDs[tg.RefID] {
				t.Errorf("%s: target refId %q is empty or repeated", name, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s target %s: no expr", name, tg.RefID)
			}
			if tg.Datasource != nil {
				if got, why := grafanaResolveDatasource(tg.Datasource, d.Templating.List); why != "" || got != uid {
					t.Errorf("%s target %s: datasource %+v (%s), want the provisioned %q", name, tg.RefID, *tg.Datasource, why, uid)
				}
			}
		}
	}
	if nested == 0 {
		t.Log("no collapsed row holds panels; the nested-panel walk is not exercised by the dashboard")
	}

	// asynq_tasks_enqueued_total is a gauge (tasks in each state now) despite its name: a rate of it
	// is meaningless. TestGrafanaDashboardMetricsExported checks every metric's type; this check needs
	// no Redis.
	for _, e := range grafanaExprs(t, d) {
		refs, err := grafanaMetricRefs(e.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", e.where, e.expr, err)
			continue
		}
		for _, r := range refs {
			if f := grafanaRangeFunc(r); r.Name == "asynq_tasks_enqueued_total" && f != "" {
				t.Errorf("%s: %s(asynq_tasks_enqueued_total[...]): it is a gauge of tasks per state, not a counter", e.where, f)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------------
// Every metric the dashboard asks for is one a worker exports.

// grafanaSeriesKind is how a series can be used: "counter" (counters, and histograms' and summaries'
// _bucket, _sum and _count series, which only go up) or "gauge".
type grafanaSeriesKind string

// grafanaExportedSeries gathers a worker's registry, as worker.New sets it up with QUEUE_METRICS on,
// and returns the series names it exports, with their kind.
func grafanaExportedSeries(t *testing.T) map[string]grafanaSeriesKind {
	t.Helper()
	m := metrics.NewWorker()
	m.WatchDeadLetterStore(func() (int64, error) { return 0, nil })
	// The per-class and per-operation histograms and the API call counter have no series until a job
	// has run and a call was made: record one of each, as a worker that has done some work has.
	m.ObserveAttempt(versori.ClassOK, time.Millisecond)
	m.ObserveVersori(versori.OpActivate, 200, time.Millisecond)

	// asynq's queue collector exports one set of series per queue that exists, so make one.
	db := testutil.Redis(t)
	client := asynq.NewClientFromRedisClient(db.Client)
	if _, err := client.Enqueue(asynq.NewTask("grafana:test", nil), asynq.Queue("activations")); err != nil {
		t.Fatal(err)
	}
	m.WatchQueues(asynq.NewInspectorFromRedisClient(db.Client))

	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]grafanaSeriesKind{
		"up": "gauge", // Prometheus adds it to every scrape target
	}
	for _, mf := range mfs {
		name := mf.GetName()
		switch typ := mf.GetType().String(); typ {
		case "COUNTER":
			out[name] = "counter"
		case "GAUGE", "UNTYPED":
			out[name] = "gauge"
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = "counter", "counter", "counter"
		case "SUMMARY":
			out[name], out[name+"_sum"], out[name+"_count"] = "gauge", "counter", "counter"
		default:
			t.Fatalf("metric %s has type %s, which this test does not know", name, typ)
		}
	}
	// The collector reports no error when Redis fails: it logs and exports nothing. Make sure it ran.
	for _, name := range []string{"asynq_tasks_enqueued_total", "asynq_queue_size", "asynq_queue_latency_seconds",
		"asynq_queue_memory_usage_approx_bytes", "asynq_tasks_processed_total", "asynq_tasks_failed_total",
		"asynq_queue_paused_total"} {
		if _, ok := out[name]; !ok {
			t.Fatalf("the asynq queue collector did not export %s; exported: %v", name, grafanaSortedKeys(out))
		}
	}
	return out
}

func grafanaSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestGrafanaDashboardMetricsExported(t *testing.T) {
	d := grafanaLoadDashboard(t)
	exported := grafanaExportedSeries(t)

	// A job variable narrows up to the workers when it lists only jobs exporting an activator_ metric,
	// defaults to the scrape job, and offers no "All" (whose .+ matches every job).
	workerJobs := false
	for _, v := range d.Templating.List {
		if v.Name == "job" {
			var cur []string
			if json.Unmarshal(v.Current.Value, &cur) != nil {
				cur = []string{v.currentValue()}
			}
			expr, _ := grafanaVariableExpr(v.queryText())
			workerJobs = !v.IncludeAll && strings.HasPrefix(expr, "activator_") && slices.Equal(cur, []string{grafanaWorkerScrapeJob})
		}
	}
	unknown := map[string][]string{} // metric -> where
	used := 0
	for _, e := range grafanaExprs(t, d) {
		refs, err := grafanaMetricRefs(e.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", e.where, e.expr, err)
			continue
		}
		if len(refs) == 0 {
			t.Errorf("%s: %q selects no metric", e.where, e.expr)
		}
		for _, r := range refs {
			used++
			kind, ok := exported[r.Name]
			if !ok {
				unknown[r.Name] = append(unknown[r.Name], e.where)
				continue
			}
			switch f := grafanaRangeFunc(r); {
			case grafanaCounterFuncs[f] && kind != "counter":
				t.Errorf("%s: %s(%s[...]), but %s is a gauge: use it as is, or delta()/deriv()", e.where, f, r.Name, r.Name)
			case grafanaGaugeFuncs[f] && kind != "gauge":
				t.Errorf("%s: %s(%s[...]), but %s is a counter: use rate() or increase()", e.where, f, r.Name, r.Name)
			}
			if r.Name == "up" && !strings.Contains(e.expr, `job="`+grafanaWorkerScrapeJob+`"`) && !(strings.Contains(e.expr, `job=~"$job"`) && workerJobs) {
				t.Errorf("%s: up without job=%q (or job=~\"$job\" with a job variable listing only the workers' jobs) counts every scrape target, not the workers",
					e.where, grafanaWorkerScrapeJob)
			}
		}
	}
	if len(unknown) > 0 {
		var b strings.Builder
		for _, name := range grafanaSortedKeys(unknown) {
			fmt.Fprintf(&b, "\n  %s (in %s)", name, strings.Join(unknown[name], "; "))
		}
		t.Errorf("the dashboard uses metrics a worker does not export:%s\nexported: %s", b.String(),
			strings.Join(grafanaSortedKeys(exported), ", "))
	}
	if used == 0 {
		t.Error("no metric found in the dashboard's expressions")
	}
}
