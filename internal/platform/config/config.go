// Package config loads process settings from flags and environment variables. Every flag
// NAME can also be set by the environment variable PREFIX_NAME (upper case, '-' as '_');
// a flag on the command line wins over the environment. `-help` lists every setting with its
// variable and default.
package config

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvName is the environment variable that sets flag name for a process with this prefix.
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse applies environment overrides to every flag defined in fs, then parses args.
// Invalid values from either source are reported with where they came from.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvName(prefix, f.Name)
		f.Usage = fmt.Sprintf("%s (env %s)", f.Usage, env)
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", env, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("invalid environment: %s", strings.Join(errs, "; "))
	}
	return fs.Parse(args)
}

// Problems collects validation problems of a loaded configuration.
type Problems []string

// Check records msg when ok is false.
func (p *Problems) Check(ok bool, format string, args ...any) {
	if !ok {
		*p = append(*p, fmt.Sprintf(format, args...))
	}
}

// Err returns all problems as one error, or nil.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("invalid configuration: %s", strings.Join(p, "; "))
}
