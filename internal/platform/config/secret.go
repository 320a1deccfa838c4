package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ReadSecret returns the secret held in file (a password file, one line), without its trailing
// newline. Secrets come from files rather than flags or variables so they do not show in
// process listings or in every child's environment. An empty secret is an error: it would mean
// "no password" to most servers.
func ReadSecret(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		return "", errors.New("read secret: " + file + " is empty")
	}
	return s, nil
}
