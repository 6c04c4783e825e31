package ingest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/versori/activator/internal/ingest"
)

func ExampleReader() {
	const input = `userId,integrationId,templateId,connectionId,var.region,var.seats
u-1,01HZY8Q6T4J8K2M3N4P5Q6R7S8,01HZY8Q6T4J8K2M3N4P5Q6R7S9,01HZY8Q6T4J8K2M3N4P5Q6R7SA,EU,5
u-2,01HZY8Q6T4J8K2M3N4P5Q6R7S8,,,"""US""",

u-3,not-a-ulid,,,,
`
	r, err := ingest.NewReader(strings.NewReader(input), ingest.CSV)
	if err != nil {
		fmt.Println(err)
		return
	}
	for {
		row, reject, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		if reject != nil {
			fmt.Println("reject:", reject)
			continue
		}
		b, _ := json.Marshal(row.Request)
		fmt.Printf("line %d: %s\n", row.Line, b)
	}
	// Output:
	// line 2: {"userId":"u-1","integrationId":"01HZY8Q6T4J8K2M3N4P5Q6R7S8","connections":[{"templateId":"01HZY8Q6T4J8K2M3N4P5Q6R7S9","connectionId":"01HZY8Q6T4J8K2M3N4P5Q6R7SA"}],"dynamicVariables":{"region":"EU","seats":5}}
	// line 3: {"userId":"u-2","integrationId":"01HZY8Q6T4J8K2M3N4P5Q6R7S8","connections":[],"dynamicVariables":{"region":"US"}}
	// reject: line 5: integrationId: is not a ULID (26 Crockford base32 characters)
}
