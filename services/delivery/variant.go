package delivery

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Variant is one arm of a campaign's A/B test as delivery splits recipients over it: the
// campaign's variant name and its weight (campaigns validates the weights; a weight here is
// a positive share of the total).
type Variant struct {
	Name   string
	Weight int
}

// ErrNoVariants is returned when a campaign has no variant with a positive weight.
var ErrNoVariants = errors.New("no variant with a positive weight")

// AssignVariant picks the variant of contactID in campaignID by the weights. The choice is a
// pure function of (campaign, contact, weights): resolving recipients again, on any replica,
// after a restart, gives every contact the same variant, so a recipient's variant never
// changes between its ledger row, its message and its tracked events. The campaign id salts
// the hash so a contact is not always in the first arm of every campaign.
//
// The hash is SHA-256 (uniform whatever the ids look like); its first 8 bytes taken modulo
// the total weight pick a bucket, and the buckets are laid out in the variants' order.
func AssignVariant(campaignID, contactID string, variants []Variant) (string, error) {
	total := 0
	for _, v := range variants {
		if v.Weight < 0 {
			return "", fmt.Errorf("variant %q: negative weight %d", v.Name, v.Weight)
		}
		total += v.Weight
	}
	if total <= 0 {
		return "", ErrNoVariants
	}
	h := sha256.New()
	// Length-prefixed so ("ab","c") and ("a","bc") hash apart.
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(campaignID)))
	h.Write(n[:])
	h.Write([]byte(campaignID))
	h.Write([]byte(contactID))
	sum := h.Sum(nil)
	bucket := binary.BigEndian.Uint64(sum[:8]) % uint64(total)
	for _, v := range variants {
		if bucket < uint64(v.Weight) {
			return v.Name, nil
		}
		bucket -= uint64(v.Weight)
	}
	return "", ErrNoVariants // unreachable: the buckets cover [0, total)
}
