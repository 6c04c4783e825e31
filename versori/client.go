// Package versori is a typed client for Versori's Embedded API v1: activating integrations for end
// users, listing a user's activations, and reading or deleting one. Every error it returns can be
// classified with Classify.
package versori

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBaseURL is the production Embedded API.
const DefaultBaseURL = "https://platform.versori.com/api/embedded/v1"

// Operation names, as used in Observer calls and metrics labels.
const (
	OpActivate         = "activate"
	OpListActivations  = "list_activations"
	OpGetActivation    = "get_activation"
	OpDeleteActivation = "delete_activation"
	OpUpdateVariables  = "update_variables"
	OpGetEndUser       = "get_end_user"
	OpCreateEndUser    = "create_end_user"
)

// Observer is told about every HTTP call the client makes: the operation, the status code (0 when no
// response arrived) and how long it took. It must be cheap and safe for concurrent use.
type Observer func(op string, status int, took time.Duration)

// Limiter paces calls: Wait blocks until the next call may be sent, or returns ctx's error.
type Limiter interface {
	Wait(ctx context.Context) error
}

// Config configures a Client.
type Config struct {
	BaseURL string        // default DefaultBaseURL
	HubID   string        // needed to list a user's activations
	Auth    Authenticator // required
	// Concurrency, when positive, is how many calls may be in flight at once: a call waits for a
	// free slot before the limiter and the request. It also sizes the keep-alive pool.
	Concurrency int
	// Timeout bounds one call, from dialling to reading the whole body (default: DefaultConfig).
	Timeout time.Duration
	Observe Observer
	// Limiter, if set, is waited on before every HTTP call (each page of a listing included).
	Limiter   Limiter
	UserAgent string // default "activator"
	// HTTPClient replaces the client's own; its pool and timeouts are then the caller's. The Client
	// uses a shallow copy of it that never follows redirects; the caller's is left as it is.
	HTTPClient *http.Client
}

// Client calls the Embedded API. It is safe for concurrent use; make one per process.
type Client struct {
	base    string
	hubID   string
	auth    Authenticator
	timeout time.Duration
	observe Observer
	limiter Limiter
	ua      string
	hc      *http.Client
	bufs    sync.Pool     // *bytes.Buffer for response bodies
	slots   chan struct{} // one per call in flight; nil: no bound
	// Header values shared by every request (the transport never changes a request's headers), so
	// that a call does not allocate them.
	hdrJSON, hdrUA []string
	// skew is the API's clock minus ours, in nanoseconds, read from the Date header of the last error
	// answer; hasSkew says whether one was read. Only error answers are read: a refused token is when
	// the clocks matter, and successes stay free of the parse.
	skew    atomic.Int64
	hasSkew atomic.Bool
}

// ClockSkew returns how far the API's clock was ahead of ours (negative: behind) by the Date header
// of the last error answer that had one, to the second; ok is false before any.
func (c *Client) ClockSkew() (skew time.Duration, ok bool) {
	if !c.hasSkew.Load() {
		return 0, false
	}
	return time.Duration(c.skew.Load()), true
}

// noteDate records the skew the Date header of an answer to a call sent at start shows.
func (c *Client) noteDate(h http.Header, start time.Time) {
	d, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return
	}
	end := time.Now()
	// The API stamped the answer somewhere between start and end; Date has whole seconds, so the
	// middle is as good as any.
	mid := start.Add(end.Sub(start) / 2)
	c.skew.Store(int64(d.Sub(mid.Truncate(time.Second))))
	c.hasSkew.Store(true)
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		base:    strings.TrimRight(cfg.BaseURL, "/"),
		hubID:   cfg.HubID,
		auth:    cfg.Auth,
		timeout: cfg.Timeout,
		observe: cfg.Observe,
		limiter: cfg.Limiter,
		ua:      cfg.UserAgent,
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	if cfg.HTTPClient != nil {
		hc := *cfg.HTTPClient
		c.hc = &hc
	} else {
		c.hc = &http.Client{Transport: newTransport(cfg.Concurrency)}
	}
	c.hc.CheckRedirect = noRedirects
	c.hdrJSON, c.hdrUA = []string{"application/json"}, []string{c.ua}
	if cfg.Concurrency > 0 {
		c.slots = make(chan struct{}, cfg.Concurrency)
	}
	return c, nil
}

// noRedirects makes http.Client hand back a 3xx answer instead of following it. Following one
// would re-send a POST /activations, which is not idempotent, to another place (307, 308) or turn
// it into a GET (301, 302, 303); either way the call is no longer the one we meant, and the API
// itself never redirects, so a redirect says the base URL is wrong.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newTransport returns an HTTP transport whose keep-alive pool holds a connection per concurrent
// call, so that steady load never waits on a dial. It sets no response-header timeout: each call's
// context already bounds the whole call (Config.Timeout), and the transport's own timer for it cost
// every call a timer.
func newTransport(concurrency int) *http.Transport {
	if concurrency < 1 {
		concurrency = 1
	}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          concurrency,
		MaxIdleConnsPerHost:   concurrency,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Activate calls POST /activations. It is not idempotent: when it fails with an error for which
// IsOutcomeUnknown is true, the activation may exist, and a caller must look before calling again.
func (c *Client) Activate(ctx context.Context, req ActivationRequest) (*Activated, error) {
	body, err := req.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("versori activate: encoding request: %w", err)
	}
	var out Activated
	if err := c.do(ctx, OpActivate, http.MethodPost, "/activations", nil, req.UserID, body, &out); err != nil {
		return nil, err
	}
	if out.ID == "" {
		return nil, &TransportError{Op: OpActivate, Err: errors.New("response has no activation id")}
	}
	return &out, nil
}

// maxPages stops a listing whose cursor never ends.
const maxPages = 1000

// ListUserActivations returns all of userID's activations, following the next cursor. When
// integrationID is set, the API filters by it. A 200 page without the documented shape is a
// *TransportError whose outcome is unknown, never an empty list.
func (c *Client) ListUserActivations(ctx context.Context, userID, integrationID string) ([]EndUserActivation, error) {
	acts, _, err := c.listUserActivations(ctx, userID, integrationID)
	return acts, err
}

// listUserActivations is ListUserActivations, also returning the totalCount of the last page.
func (c *Client) listUserActivations(ctx context.Context, userID, integrationID string) ([]EndUserActivation, int, error) {
	if c.hubID == "" {
		return nil, 0, errors.New("versori list_activations: no hub id configured")
	}
	path := "/embed/" + url.PathEscape(c.hubID) + "/users/" + url.PathEscape(userID) + "/activations"
	var all []EndUserActivation
	after := ""
	for range maxPages {
		q := url.Values{"first": {"100"}}
		if integrationID != "" {
			q.Set("integration_id", integrationID)
		}
		if after != "" {
			q.Set("after", after)
		}
		var page EndUserActivationPage
		// page.decodeBody refuses an answer without an "activations" array, so that a gateway's or a
		// changed API's 200 never reads as "this user has no activations".
		if err := c.do(ctx, OpListActivations, http.MethodGet, path, q, userID, nil, &page); err != nil {
			return nil, 0, err
		}
		all = append(all, page.Activations...)
		if page.Next == "" {
			return all, page.TotalCount, nil
		}
		// An empty page with a cursor is followed too: stopping there could miss the activation.
		if page.Next == after {
			return nil, 0, &TransportError{Op: OpListActivations, Err: fmt.Errorf("the list's cursor %q does not advance", after)}
		}
		after = page.Next
	}
	return nil, 0, &TransportError{Op: OpListActivations, Err: fmt.Errorf("more than %d pages", maxPages)}
}

// FindActivations returns every activation userID has of integrationID, in the order the API lists
// them (oldest first), or none.
func (c *Client) FindActivations(ctx context.Context, userID, integrationID string) ([]EndUserActivation, error) {
	acts, total, err := c.listUserActivations(ctx, userID, integrationID)
	if err != nil {
		return nil, err
	}
	found := matching(acts, integrationID)
	if len(found) == 0 && total > len(acts) {
		// The API counts more activations than it listed. Whether its count is of the filtered
		// list (then the listing is broken) or of all the user's, the unfiltered list settles it;
		// reading "none" here could make a second activation.
		if acts, _, err = c.listUserActivations(ctx, userID, ""); err != nil {
			return nil, err
		}
		found = matching(acts, integrationID)
	}
	if len(found) == 0 {
		return nil, nil
	}
	return found, nil
}

// matching keeps the activations of integrationID. The API filters by integration already, but
// filtering again keeps a filter it ignores from returning other integrations. ULIDs are
// case-insensitive, so the id is compared as one.
func matching(acts []EndUserActivation, integrationID string) []EndUserActivation {
	found := acts[:0]
	for _, a := range acts {
		if strings.EqualFold(a.Integration.ID, integrationID) {
			found = append(found, a)
		}
	}
	return found
}

// FindActivation returns the first of userID's activations of integrationID as FindActivations lists
// them, or nil when there is none.
func (c *Client) FindActivation(ctx context.Context, userID, integrationID string) (*EndUserActivation, error) {
	acts, err := c.FindActivations(ctx, userID, integrationID)
	if err != nil || len(acts) == 0 {
		return nil, err
	}
	return &acts[0], nil
}

// GetActivation calls GET /activations/{id}. With JWT auth, ctx must carry the end user (WithEndUser).
func (c *Client) GetActivation(ctx context.Context, id string) (*Activation, error) {
	var out Activation
	if err := c.do(ctx, OpGetActivation, http.MethodGet, "/activations/"+url.PathEscape(id), nil, endUser(ctx), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteActivation calls DELETE /activations/{id}, deactivating the integration for its user. With
// JWT auth, ctx must carry the end user (WithEndUser).
func (c *Client) DeleteActivation(ctx context.Context, id string) error {
	return c.do(ctx, OpDeleteActivation, http.MethodDelete, "/activations/"+url.PathEscape(id), nil, endUser(ctx), nil, nil)
}

// UpdateDynamicVariables calls PUT /activations/{id}/variables, replacing the activation's dynamic
// variables with vars (a JSON object), and returns the variables the API then holds. It is
// idempotent. userID is the activation's end user (for JWT auth).
func (c *Client) UpdateDynamicVariables(ctx context.Context, userID, activationID string, vars json.RawMessage) (json.RawMessage, error) {
	if len(vars) == 0 {
		vars = json.RawMessage("{}")
	}
	body, err := json.Marshal(struct {
		DynamicVariables json.RawMessage `json:"dynamicVariables"`
	}{vars})
	if err != nil {
		return nil, fmt.Errorf("versori update_variables: encoding request: %w", err)
	}
	var out struct {
		DynamicVariables json.RawMessage `json:"dynamicVariables"`
	}
	if err := c.do(ctx, OpUpdateVariables, http.MethodPut, "/activations/"+url.PathEscape(activationID)+"/variables", nil, userID, body, &out); err != nil {
		return nil, err
	}
	return out.DynamicVariables, nil
}

// GetEndUser calls GET /hubs/{hub}/users/{externalID}: the end user whose external id (the userId
// activations name) is externalID. An unknown user is an *Error with status 404.
func (c *Client) GetEndUser(ctx context.Context, externalID string) (*EndUser, error) {
	if c.hubID == "" {
		return nil, errors.New("versori get_end_user: no hub id configured")
	}
	var out EndUser
	path := "/hubs/" + url.PathEscape(c.hubID) + "/users/" + url.PathEscape(externalID)
	if err := c.do(ctx, OpGetEndUser, http.MethodGet, path, url.Values{"identifier_type": {"external"}}, externalID, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateEndUser calls POST /hubs/{hub}/users. It is not idempotent, but the API refuses a second
// user with the same external id (409): after an error for which IsOutcomeUnknown is true, a caller
// looks the user up (GetEndUser) before creating again.
func (c *Client) CreateEndUser(ctx context.Context, req EndUserCreate) (*EndUser, error) {
	if c.hubID == "" {
		return nil, errors.New("versori create_end_user: no hub id configured")
	}
	if pc := req.PrimaryConnection; pc != nil && (pc.Variables == nil || len(pc.Credentials) == 0) {
		// The spec requires both; nil would go out as null. As for an activation's new connections,
		// no credentials are written {} and no variables [].
		cp := *pc
		if cp.Variables == nil {
			cp.Variables = []ConnectionVariable{}
		}
		if len(cp.Credentials) == 0 {
			cp.Credentials = json.RawMessage("{}")
		}
		req.PrimaryConnection = &cp
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("versori create_end_user: encoding request: %w", err)
	}
	var out EndUser
	if err := c.do(ctx, OpCreateEndUser, http.MethodPost, "/hubs/"+url.PathEscape(c.hubID)+"/users", nil, req.ExternalID, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// bodyDecoder is a response type that reads only part of its body, faster than json.Unmarshal.
type bodyDecoder interface{ decodeBody([]byte) error }

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// maxBody bounds a success response (a page of 100 activations is a few hundred KiB at most).
const maxBody = 16 << 20

// maxPooledBuf keeps a buffer grown by an unusually large response out of the pool.
const maxPooledBuf = 1 << 20

func (c *Client) do(ctx context.Context, op, method, path string, q url.Values, userID string, body []byte, out any) error {
	// The waits for a slot and for the rate limit are not part of the call's timeout. The slot comes
	// first, so that a rate-limit slot is booked only for a call that can go at once.
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
			defer func() { <-c.slots }()
		case <-ctx.Done():
			return &TransportError{Op: op, Err: fmt.Errorf("waiting for a free call slot: %w", context.Cause(ctx)), NotSent: true}
		}
	}
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return &TransportError{Op: op, Err: fmt.Errorf("waiting for the rate limit: %w", err), NotSent: true}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("versori %s: building request: %w", op, err)
	}
	if body != nil {
		req.Header["Content-Type"] = c.hdrJSON
	}
	req.Header["Accept"] = c.hdrJSON
	req.Header["User-Agent"] = c.hdrUA
	if err := c.auth.Authorize(req, userID); err != nil {
		return fmt.Errorf("versori %s: %w", op, err)
	}

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.observed(op, 0, start)
		return &TransportError{Op: op, Err: err, NotSent: neverSent(err)}
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Op: op, StatusCode: resp.StatusCode}
		c.noteDate(resp.Header, start)
		e.RetryAfter, e.HasRetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		raw, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		c.observed(op, resp.StatusCode, start)
		if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
			// A redirect's body is the gateway's, not the API's error body.
			e.Message = redirectMessage(resp)
			return e
		}
		if rerr == nil && json.Unmarshal(raw, &e.ErrorBody) != nil {
			e.Message = strings.TrimSpace(string(raw))
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return e
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	defer c.bufs.Put(buf)
	buf.Reset()
	// Read to the end, so that the connection goes back to the pool, then decode from memory.
	var n int64
	if n, err = buf.ReadFrom(io.LimitReader(resp.Body, maxBody+1)); err == nil && n > maxBody {
		err = fmt.Errorf("response is larger than %d bytes", maxBody)
	}
	if err == nil && out != nil {
		if d, ok := out.(bodyDecoder); ok {
			err = d.decodeBody(buf.Bytes())
		} else {
			err = json.Unmarshal(buf.Bytes(), out)
		}
	}
	if buf.Cap() > maxPooledBuf {
		*buf = bytes.Buffer{}
	}
	c.observed(op, resp.StatusCode, start)
	if err != nil {
		// The server answered success but the body did not arrive whole: it may have acted.
		return &TransportError{Op: op, Err: fmt.Errorf("reading %d response: %w", resp.StatusCode, err)}
	}
	return nil
}

// redirectMessage says where a 3xx answer pointed, without its user info, query or fragment, which
// may hold credentials or tokens, and what that most likely means.
func redirectMessage(resp *http.Response) string {
	where := "no Location"
	if loc, err := resp.Location(); err == nil {
		loc.User, loc.RawQuery, loc.ForceQuery, loc.Fragment, loc.RawFragment = nil, "", false, "", ""
		where = loc.String()
	} else if !errors.Is(err, http.ErrNoLocation) {
		where = "a Location that is not a URL"
	}
	return "the API answered with a redirect to " + where +
		", which activator does not follow: VERSORI_BASE_URL is probably wrong"
}

func (c *Client) observed(op string, status int, start time.Time) {
	if c.observe != nil {
		c.observe(op, status, time.Since(start))
	}
}

// StatusLabel is the metrics label for a call's status: the code, or "error" when no response came.
func StatusLabel(status int) string {
	if status == 0 {
		return "error"
	}
	return strconv.Itoa(status)
}
