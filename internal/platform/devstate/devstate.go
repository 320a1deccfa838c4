// Package devstate lets tests find the development infrastructure that scripts/devenv.sh started
// (`make infra`): its addresses and the files holding its credentials are in .state/env at the
// repository's root. `make test` exports them; a plain `go test` in any package finds them here.
package devstate

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

var (
	once sync.Once
	vars map[string]string
)

// Getenv returns the environment variable key, or else its value in the nearest .state/env
// above the working directory, or "".
func Getenv(key string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	once.Do(load)
	return vars[key]
}

func load() {
	vars = map[string]string{}
	dir, err := os.Getwd()
	if err != nil {
		return
	}
	for {
		f, err := os.Open(filepath.Join(dir, ".state", "env"))
		if err == nil {
			defer f.Close()
			s := bufio.NewScanner(f)
			for s.Scan() {
				if k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "="); ok && !strings.HasPrefix(k, "#") {
					vars[k] = v
				}
			}
			return
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return
		}
		dir = parent
	}
}
