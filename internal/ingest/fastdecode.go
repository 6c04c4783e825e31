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
	names, _ := shapeRequest.fields()
	return fastObject(data, names, func(i int, v []byte) bool {
		switch i {
		case 0:
			return fastString(v, &r.UserID)
		case 1:
			return fastString(v, &r.IntegrationID)
		case 2:
			return fastConnections(v, &r.Connections)
		}
		return fastRaw(v, &r.DynamicVariables)
	})
}

func fastConnections(data []byte, cs *[]versori.ActivationConnection) bool {
	// A null element would be a zero connection; Validate refuses it, and the Decoder path says so.
	return fastArray(data, cs, func(e []byte, c *versori.ActivationConnection) bool {
		names, _ := shapeConnection.fields()
		return fastObject(e, names, func(i int, v []byte) bool {
			switch i {
			case 0:
				return fastString(v, &c.TemplateID)
			case 1:
				return fastString(v, &c.ConnectionID)
			case 2:
				return fastString(v, &c.Name)
			case 3:
				return fastRaw(v, &c.Credentials)
			}
			return fastVariables(v, &c.Variables)
		})
	})
}

func fastVariables(data []byte, vs *[]versori.ConnectionVariable) bool {
	return fastArray(data, vs, func(e []byte, v *versori.ConnectionVariable) bool {
		names, _ := shapeVariable.fields()
		return fastObject(e, names, func(i int, val []byte) bool {
			if i == 0 {
				return fastString(val, &v.Name)
			}
			return fastString(val, &v.Value)
		})
	})
}

// fastObject scans the JSON object data and calls field with the index in names of each field and
// its value. It is false for bad JSON, a value field refuses, a name not in names, or a repeated
// one: encoding/json merges a repeated field into what the first set, and the Decoder path does that.
func fastObject(data []byte, names []string, field func(i int, value []byte) bool) bool {
	var seen uint8 // bit i: names[i] was seen
	ok := true
	err := jsonscan.Object(data, func(name, value []byte) bool {
		i := 0
		for i < len(names) && names[i] != string(name) {
			i++
		}
		ok = i < len(names) && seen&(1<<i) == 0 && field(i, value)
		seen |= 1 << i
		return ok
	})
	return ok && err == nil
}

// fastArray decodes the JSON array data into *out, each element by elem, as json.Unmarshal does: null
// leaves *out nil, and [] makes it empty, not nil.
func fastArray[T any](data []byte, out *[]T, elem func(e []byte, v *T) bool) bool {
	if isNullValue(data) {
		return true
	}
	s := []T{}
	ok := true
	err := jsonscan.Array(data, func(e []byte) bool {
		var zero T
		s = append(s, zero)
		ok = elem(e, &s[len(s)-1]) // into the slice: a local passed to elem would escape
		return ok
	})
	*out = s
	return ok && err == nil
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
