package config

import (
	"flag"
	"strings"
	"testing"
)

func TestParseEnvAndFlags(t *testing.T) {
	t.Setenv("CM_TEST_LISTEN", "0.0.0.0:1")
	t.Setenv("CM_TEST_RATE_LIMIT", "7")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9", "listen address")
	limit := fs.Int("rate-limit", 1, "limit")
	level := fs.String("level", "info", "level")
	if err := Parse(fs, "CM_TEST", []string{"-rate-limit", "8"}); err != nil {
		t.Fatal(err)
	}
	if *listen != "0.0.0.0:1" || *limit != 8 || *level != "info" {
		t.Fatalf("listen=%q limit=%d level=%q; want env, then flag over env, then default", *listen, *limit, *level)
	}
	if u := fs.Lookup("rate-limit").Usage; !strings.Contains(u, "CM_TEST_RATE_LIMIT") {
		t.Fatalf("usage %q does not name the variable", u)
	}
}

func TestParseRejectsBadEnvironment(t *testing.T) {
	t.Setenv("CM_TEST_RATE_LIMIT", "many")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.Int("rate-limit", 1, "limit")
	err := Parse(fs, "CM_TEST", nil)
	if err == nil || !strings.Contains(err.Error(), "CM_TEST_RATE_LIMIT") {
		t.Fatalf("err = %v; want one naming the variable", err)
	}
}
