package background

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestServe(t *testing.T) {
	tests := []struct {
		name    string
		handler time.Duration // how long each request takes
		grace   time.Duration
		wantErr bool
	}{
		{"request finishes within grace", 50 * time.Millisecond, 5 * time.Second, false},
		{"request cut off after grace", 10 * time.Second, 100 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			started := make(chan struct{})
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				select {
				case <-time.After(tt.handler):
				case <-r.Context().Done():
				}
				io.WriteString(w, "done")
			})}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Serve(ctx, srv, ln, tt.grace) }()
			resp := make(chan error, 1)
			go func() {
				r, err := http.Get("http://" + ln.Addr().String())
				if err == nil {
					r.Body.Close()
				}
				resp <- err
			}()
			<-started
			cancel()
			err = <-done
			if (err != nil) != tt.wantErr {
				t.Errorf("Serve = %v, want error %v", err, tt.wantErr)
			}
			if rerr := <-resp; (rerr != nil) != tt.wantErr {
				t.Errorf("the request in flight: %v, want cut off %v", rerr, tt.wantErr)
			}
		})
	}
	t.Run("listener closed", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if err := Serve(context.Background(), &http.Server{}, ln, time.Second); err == nil || errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve on a closed listener = %v, want its error", err)
		}
	})
}
