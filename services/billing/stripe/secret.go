package stripe

import "log/slog"

// Secret is a credential (the secret API key). It prints, formats and logs as "[redacted]" so
// that a Config passed to a logger or a %v never shows the key; Reveal is the one way to read
// it, used only when the key goes on the wire.
type Secret string

const redacted = "[redacted]"

// String hides the secret.
func (s Secret) String() string { return redacted }

// GoString hides the secret from %#v as well.
func (s Secret) GoString() string { return redacted }

// LogValue hides the secret from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText hides the secret from encoders (JSON, YAML) that would otherwise write it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }
