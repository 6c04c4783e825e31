package envflag

import (
	"errors"
	"fmt"
	"strings"

	"github.com/versori/activator/internal/configerr"
)

// Explain turns a Validate error that names a struct field into one that names the variable (or
// flag) that sets it, using fields (from Fields): "worker: Concurrency must be at least 1, got 0"
// becomes "WORKER_CONCURRENCY must be at least 1, got 0". Other fields named in the problem are
// renamed too. An error about a field no flag sets is returned as it is.
func Explain(err error, fields map[string]Var) error {
	var ce *configerr.Error
	if !errors.As(err, &ce) {
		return err
	}
	v, ok := fields[ce.Field]
	if !ok {
		return err
	}
	parent := ""
	if i := strings.LastIndexByte(ce.Field, '.'); i >= 0 {
		parent = ce.Field[:i+1]
	}
	return fmt.Errorf("%s %s", v.Name(), rename(ce.Problem, parent, fields))
}

// rename replaces each capitalised word of problem that is a field of fields, looked up first
// under parent (a sibling), then from the root, with its variable.
func rename(problem, parent string, fields map[string]Var) string {
	var b strings.Builder
	isWord := func(r byte) bool {
		return r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
	}
	for i := 0; i < len(problem); {
		if !isWord(problem[i]) {
			b.WriteByte(problem[i])
			i++
			continue
		}
		j := i
		for j < len(problem) && isWord(problem[j]) {
			j++
		}
		word := problem[i:j]
		// A sentence's full stop is no part of the name.
		trail := ""
		for strings.HasSuffix(word, ".") {
			word, trail = word[:len(word)-1], trail+"."
		}
		if word != "" && word[0] >= 'A' && word[0] <= 'Z' {
			if v, ok := fields[parent+word]; ok {
				word = v.Name()
			} else if v, ok := fields[word]; ok {
				word = v.Name()
			}
		}
		b.WriteString(word + trail)
		i = j
	}
	return b.String()
}
