package versoritest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// adminPrefix is where the controls live when the stand-in runs as its own process. They need no auth
// and are not recorded as calls, so that watching a run does not change what it measures.
const adminPrefix = "/_standin/"

// serveAdmin serves the endpoints listed in the package doc.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, adminPrefix)
	q := r.URL.Query()
	method := func(want string) bool {
		if r.Method != want {
			w.Header().Set("Allow", want)
			adminJSON(w, http.StatusMethodNotAllowed, errorBody(http.StatusMethodNotAllowed, "use "+want))
			return false
		}
		return true
	}
	switch name {
	case "stats":
		if method(http.MethodGet) {
			adminJSON(w, http.StatusOK, s.Stats())
		}
	case "calls":
		if method(http.MethodGet) {
			adminJSON(w, http.StatusOK, nonNil(s.Calls()))
		}
	case "activations":
		if method(http.MethodGet) {
			adminJSON(w, http.StatusOK, nonNil(s.Activations()))
		}
	case "users":
		switch r.Method {
		case http.MethodGet:
			adminJSON(w, http.StatusOK, nonNil(s.Users()))
		case http.MethodPost:
			id := q.Get("externalId")
			if id == "" {
				adminJSON(w, http.StatusBadRequest, errorBody(http.StatusBadRequest, "users needs externalId"))
				return
			}
			s.AddUser(id)
			w.WriteHeader(http.StatusNoContent)
		default:
			method(http.MethodGet)
		}
	case "faults":
		switch r.Method {
		case http.MethodGet:
			adminJSON(w, http.StatusOK, s.CurrentFaults())
		case http.MethodPost, http.MethodPut:
			var f Faults
			b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
			if err == nil {
				err = json.Unmarshal(b, &f)
			}
			if err == nil {
				err = f.Validate()
			}
			if err != nil {
				adminJSON(w, http.StatusBadRequest, errorBody(http.StatusBadRequest, "faults: "+err.Error()))
				return
			}
			s.SetFaults(f)
			adminJSON(w, http.StatusOK, f)
		default:
			method(http.MethodPost)
		}
	case "require":
		if !method(http.MethodPost) {
			return
		}
		integration, template := q.Get("integration"), q.Get("template")
		if integration == "" || template == "" {
			adminJSON(w, http.StatusBadRequest, errorBody(http.StatusBadRequest, "require needs integration and template"))
			return
		}
		s.RequireConnection(integration, template)
		w.WriteHeader(http.StatusNoContent)
	case "clear":
		if !method(http.MethodPost) {
			return
		}
		integration := q.Get("integration")
		if integration == "" {
			adminJSON(w, http.StatusBadRequest, errorBody(http.StatusBadRequest, "clear needs integration"))
			return
		}
		s.ClearRequirements(integration)
		w.WriteHeader(http.StatusNoContent)
	default:
		adminJSON(w, http.StatusNotFound, errorBody(http.StatusNotFound, "no admin endpoint "+r.URL.Path))
	}
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody(status, err.Error()))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
