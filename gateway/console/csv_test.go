package console

import (
	"encoding/csv"
	"strings"
	"testing"
)

func TestCSVSafe(t *testing.T) {
	for in, want := range map[string]string{
		"":                             "",
		"a":                            "a",
		"=1+1":                         "'=1+1",
		`=HYPERLINK("http://x","y")`:   `'=HYPERLINK("http://x","y")`,
		"+cmd":                         "'+cmd",
		"-2+3":                         "'-2+3",
		"@SUM(A1)":                     "'@SUM(A1)",
		"\t=1":                         "'\t=1",
		"\r=1":                         "'\r=1",
		"-0.25":                        "-0.25", // a number (a negative uplift) stays a number
		"+3":                           "+3",
		"-Inf":                         "'-Inf",
		"<img src=x onerror=alert(1)>": "<img src=x onerror=alert(1)>",
		"a=b":                          "a=b",
	} {
		if got := csvSafe(in); got != want {
			t.Errorf("csvSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCSVTable(t *testing.T) {
	data, err := csvTable{Header: []string{"variant", "clicks"}, Rows: [][]string{
		{"=cmd|' /C calc'!A0", "3"}, {"a,\"b\"\nc", "-1"}}}.bytes()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(string(data))).ReadAll()
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	want := [][]string{{"variant", "clicks"}, {"'=cmd|' /C calc'!A0", "3"}, {"a,\"b\"\nc", "-1"}}
	if len(rows) != len(want) {
		t.Fatalf("rows %q", rows)
	}
	for i := range want {
		for j := range want[i] {
			if rows[i][j] != want[i][j] {
				t.Errorf("cell %d,%d = %q, want %q", i, j, rows[i][j], want[i][j])
			}
		}
	}
}

func TestCSVNumbers(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 12500000: "12.5", 1: "0.000001", 2000: "0.002", -1500000: "-1.5", 7_000_000: "7"} {
		if got := csvMicros(in); got != want {
			t.Errorf("csvMicros(%d) = %q, want %q", in, got, want)
		}
	}
	if got := csvRatio(ratio{0.1, true}); got != "0.1" {
		t.Errorf("csvRatio = %q", got)
	}
	if got := csvRatio(ratio{0, false}); got != "" {
		t.Errorf("undefined ratio = %q, want empty", got)
	}
	for in, want := range map[string]string{"campaign-1f-variants.csv": "campaign-1f-variants.csv", "a\"b/../c.csv": "a_b_.._c.csv", "": "table.csv"} {
		if got := safeFilename(in); got != want {
			t.Errorf("safeFilename(%q) = %q, want %q", in, got, want)
		}
	}
}
