package envflag

import (
	"fmt"
	"strings"
)

// CheckDoc returns what is wrong with the table under the heading "## "+section of markdown, a
// documentation page, against vars: a row per setting, its cells the variable, the flag, the default
// and the meaning, each name and value in backquotes. Every Var must have a row, with its flag and
// (the first backquoted value of the cell) its default, and every row must be a Var. A default cell
// of a Var without a default is not checked: it says in words what happens instead. A Secret's row
// names VAR_FILE beside VAR and no flag, since it has none.
func CheckDoc(markdown, section string, vars []Var) []string {
	rows, ok := docRows(markdown, section)
	if !ok {
		return []string{fmt.Sprintf("no section %q", "## "+section)}
	}
	var problems []string
	byFlag, secrets := map[string]Var{}, map[string]Var{}
	for _, v := range vars {
		if v.Secret {
			secrets[v.Env] = v
			continue
		}
		byFlag[v.Flag] = v
	}
	seen := map[string]bool{}
	for _, r := range rows {
		env, flagCell, def := firstQuoted(r[0]), firstQuoted(r[1]), firstQuoted(r[2])
		if v, ok := secrets[env]; ok {
			switch {
			case flagCell != "":
				problems = append(problems, fmt.Sprintf("%s: %s is a secret, read from the environment only; the doc gives it the flag `%s`", section, env, flagCell))
			case !strings.Contains(r[0], "`"+env+"_FILE`"):
				problems = append(problems, fmt.Sprintf("%s: the row of %s does not name `%s_FILE`", section, env, env))
			case v.Default != "" && v.Default != def:
				problems = append(problems, fmt.Sprintf("%s: %s's default is `%s`, the doc says `%s`", section, env, v.Default, def))
			}
			seen["$"+env] = true
			continue
		}
		flagName := strings.TrimLeft(strings.Fields(flagCell + " x")[0], "-")
		v, ok := byFlag[flagName]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: the row of %s -%s: no such flag", section, env, flagName))
			continue
		case v.Env != env:
			problems = append(problems, fmt.Sprintf("%s: -%s is read from %q, the doc says %q", section, flagName, v.Env, env))
		case v.Default != "" && v.Default != def:
			problems = append(problems, fmt.Sprintf("%s: %s's default is `%s`, the doc says `%s`", section, v.Name(), v.Default, def))
		}
		seen[flagName] = true
	}
	for _, v := range vars {
		switch {
		case v.Secret && !seen["$"+v.Env]:
			problems = append(problems, fmt.Sprintf("%s: the secret %s (default %q) is not in the table", section, v.Env, v.Default))
		case !v.Secret && !seen[v.Flag]:
			problems = append(problems, fmt.Sprintf("%s: %s (-%s, default %q) is not in the table", section, v.Name(), v.Flag, v.Default))
		}
	}
	return problems
}

// docRows returns the cells of the table rows of a section, header and rule left out.
func docRows(markdown, section string) ([][]string, bool) {
	var rows [][]string
	in, found := false, false
	for line := range strings.SplitSeq(markdown, "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == section
			found = found || in
			continue
		}
		if !in || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 4 || strings.HasPrefix(strings.TrimSpace(cells[0]), "---") || strings.TrimSpace(cells[0]) == "variable" {
			continue
		}
		rows = append(rows, cells)
	}
	return rows, found
}

// firstQuoted is the first backquoted text of cell, or "".
func firstQuoted(cell string) string {
	_, rest, ok := strings.Cut(cell, "`")
	if !ok {
		return ""
	}
	q, _, _ := strings.Cut(rest, "`")
	return q
}
