// Package receipt is the signed record of a completed data-subject request: its document, the
// canonical JSON encoding that is signed, and Ed25519 signing and verification. It depends on
// the standard library only, so a tool (cmesh dsr receipt verify) can verify a receipt offline
// with dsr's published public keys.
//
// Canonical JSON here is encoding/json of Document: struct fields are declared in alphabetical
// order of their JSON names and maps are encoded with sorted keys, with no spaces and no HTML
// escaping. The signature covers the payload's bytes as stored, so any changed byte fails
// verification, whether or not the change keeps the JSON canonical.
package receipt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the document format's version.
const Version = 1

// Algorithm names the signature algorithm of every receipt key.
const Algorithm = "Ed25519"

// Participant is one participant's outcome in a receipt.
type Participant struct {
	// Counts are what it exported or erased, by kind of record.
	Counts map[string]int64 `json:"counts"`
	// Name is the participant's name (e.g. "analytics").
	Name string `json:"name"`
	// Outcome is "done" (or "failed").
	Outcome string `json:"outcome"`
}

// Document is what a receipt says. Its fields are in alphabetical order of their JSON names:
// that order is part of the canonical encoding. Times are RFC 3339 in UTC with milliseconds.
type Document struct {
	CompleteTime  string        `json:"complete_time"`
	CoveredHashes []string      `json:"covered_hashes"`
	CreateTime    string        `json:"create_time"`
	DeadlineTime  string        `json:"deadline_time"`
	Kind          string        `json:"kind"`
	Participants  []Participant `json:"participants"`
	Regulation    string        `json:"regulation"`
	RequestID     string        `json:"request_id"`
	SubjectHashes []string      `json:"subject_hashes"`
	Tenant        string        `json:"tenant"`
	Version       int           `json:"version"`
}

// FormatTime is how a Document writes a time.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Canonical encodes d as canonical JSON.
func Canonical(d Document) ([]byte, error) {
	if d.CoveredHashes == nil {
		d.CoveredHashes = []string{}
	}
	if d.SubjectHashes == nil {
		d.SubjectHashes = []string{}
	}
	if d.Participants == nil {
		d.Participants = []Participant{}
	}
	for i := range d.Participants {
		if d.Participants[i].Counts == nil {
			d.Participants[i].Counts = map[string]int64{}
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode receipt: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Receipt is a signed document. Its JSON form has the field names of the API's Receipt message
// (payload, signature in standard base64, keyId), so a receipt saved from the API or the CLI
// verifies here.
type Receipt struct {
	Payload   string `json:"payload"`
	Signature []byte `json:"signature"`
	KeyID     string `json:"keyId"`
}

// KeyID is the id of a public key: base64url of the first 12 bytes of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// Sign encodes d canonically and signs it with priv.
func Sign(d Document, priv ed25519.PrivateKey) (Receipt, error) {
	payload, err := Canonical(d)
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{Payload: string(payload), Signature: ed25519.Sign(priv, payload), KeyID: KeyID(priv.Public().(ed25519.PublicKey))}, nil
}

// Verification failures, as VerifyReceipt reports them.
var (
	ErrUnknownKey        = errors.New("unknown key")
	ErrSignatureMismatch = errors.New("signature mismatch")
	ErrMalformed         = errors.New("malformed payload")
)

// Verify checks r's signature with the key it names among keys (by key id) and decodes its
// document. The error is one of ErrUnknownKey, ErrSignatureMismatch or ErrMalformed.
func Verify(r Receipt, keys map[string]ed25519.PublicKey) (Document, error) {
	pub, ok := keys[r.KeyID]
	if !ok || len(pub) != ed25519.PublicKeySize {
		return Document{}, ErrUnknownKey
	}
	if !ed25519.Verify(pub, []byte(r.Payload), r.Signature) {
		return Document{}, ErrSignatureMismatch
	}
	var d Document
	dec := json.NewDecoder(bytes.NewReader([]byte(r.Payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Document{}, ErrMalformed
	}
	return d, nil
}
