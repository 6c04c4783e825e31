package ingest

import (
	"bytes"
	"encoding/json"

	"github.com/versori/activator/internal/jsonscan"
	"github.com/versori/activator/versori"
)

// decodeFast decodes data into v, a zero *versori.ActivationRequest or *[]versori.ActivationConnection,
// when data is valid JSON of the usual kind: every field name spelled exactly (after unescaping) and
// once, and every value of its field's JSON type or null. It then sets v exactly as json.Unmarshal
// would and reports true. Otherwise it reports false and v may hold part of data.
func decodeFast(data []byte, v any) bool {
	if !json.Valid(data) {
		return false
	}
	switch v := v.(type) {
	case *versori.ActivationRequest:
		return fastRequest(data, v)
	case *[]versori.ActivationConnection:
		return fastConnections(data, v)
	}
	return false
}

func fastRequest(data []byte, r *versori.ActivationRequest) bool {
	var seen uint8
	ok := true
	err := jsonscan.Object(data, func(name, value []byte) bool {
		i := -1
		switch string(name) {
		case "userId":
			i, ok = 0, fastString(value, &r.UserID)
		case "integrationId":
			i, ok = 1, fastString(value, &r.IntegrationID)
		case "connections":
			i, ok = 2, fastConnections(value, &r.Connections)
		case "dynamicVariables":
			i, ok = 3, fastRaw(value, &r.DynamicVariables)
		}
		ok = ok && once(&seen, i)
		return ok
	})
	return ok && err == nil
}

func fastConnections(data []byte, cs *[]versori.ActivationConnection) bool {
	if isNullValue(data) {
		return true
	}
	out := []versori.ActivationConnection{}
	ok := true
	err := jsonscan.Array(data, func(e []byte) bool {
		var c versori.ActivationConnection
		ok = fastConnection(e, &c)
		out = append(out, c)
		return ok
	})
	*cs = out
	return ok && err == nil
}

func fastConnection(data []byte, c *versori.ActivationConnection) bool {
	var seen uint8
	ok := true
	// A null element would be a zero connection; Validate refuses it, and the Decoder path says so.
	err := jsonscan.Object(data, func(name, value []byte) bool {
		i := -1
		switch string(name) {
		case "templateId":
			i, ok = 0, fastString(value, &c.TemplateID)
		case "connectionId":
			i, ok = 1, fastString(value, &c.ConnectionID)
		case "name":
			i, ok = 2, fastString(value, &c.Name)
		case "credentials":
			i, ok = 3, fastRaw(value, &c.Credentials)
		case "variables":
			i, ok = 4, fastVariables(value, &c.Variables)
		}
		ok = ok && once(&seen, i)
		return ok
	})
	return ok && err == nil
}

func fastVariables(data []byte, vs *[]versori.ConnectionVariable) bool {
	if isNullValue(data) {
		return true
	}
	out := []versori.ConnectionVariable{}
	ok := true
	err := jsonscan.Array(data, func(e []byte) bool {
		var v versori.ConnectionVariable
		var seen uint8
		err := jsonscan.Object(e, func(name, value []byte) bool {
			i := -1
			switch string(name) {
			case "name":
				i, ok = 0, fastString(value, &v.Name)
			case "value":
				i, ok = 1, fastString(value, &v.Value)
			}
			ok = ok && once(&seen, i)
			return ok
		})
		ok = ok && err == nil
		out = append(out, v)
		return ok
	})
	*vs = out
	return ok && err == nil
}

// once marks field i of an object as seen in the bit set seen; it is false for an unknown field (i < 0) or a repeated
// one, whose decoding by encoding/json (the last wins, merged into what the first set) is left to it.
func once(seen *uint8, i int) bool {
	if i < 0 || *seen&(1<<i) != 0 {
		return false
	}
	*seen |= 1 << i
	return true
}

// fastString decodes a JSON string into s; null leaves s as it is, as encoding/json does.
func fastString(value []byte, s *string) bool {
	if isNullValue(value) {
		return true
	}
	if len(value) == 0 || value[0] != '"' {
		return false
	}
	v, err := jsonscan.String(value)
	*s = v
	return err == nil
}

// fastRaw copies a value into a json.RawMessage, as encoding/json does (null included).
func fastRaw(value []byte, m *json.RawMessage) bool {
	*m = bytes.Clone(value)
	return true
}

func isNullValue(value []byte) bool { return string(value) == "null" }
