package tasks

import "github.com/versori/activator/versori"

// EndUserFrom is the EndUser of a CreateEndUser body (versori.DecodeRow's), whose externalId is the
// request's userId; nil for nil.
func EndUserFrom(c *versori.EndUserCreate) *EndUser {
	if c == nil {
		return nil
	}
	return &EndUser{DisplayName: c.DisplayName, PrimaryConnection: c.PrimaryConnection}
}
