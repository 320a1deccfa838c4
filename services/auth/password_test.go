package auth

import "testing"

func TestPasswordHashRoundTrip(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, "correct horse battery") || CheckPassword(h, "correct horse batterx") {
		t.Fatal("password check does not tell right from wrong")
	}
	for _, bad := range []string{"", "$argon2id$v=19$m=1,t=1,p=1$x", "$bcrypt$whatever", h[:len(h)-4]} {
		if CheckPassword(bad, "correct horse battery") {
			t.Fatalf("malformed hash %q accepted", bad)
		}
	}
}

// BenchmarkCheckPassword is the cost of one login attempt's password check (argon2id,
// 19 MiB, 2 passes), which bounds login throughput per core.
func BenchmarkCheckPassword(b *testing.B) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		CheckPassword(h, "correct horse battery")
	}
}
