package main

import (
	"context"
	"errors"
	"fmt"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

func runPassword(ctx context.Context, a *app, c *cmdline) error {
	var (
		currentFile, newFile string
		stdin                bool
	)
	c.StringVar(&currentFile, "current-file", "", "read the current password from `file`")
	c.StringVar(&newFile, "new-file", "", "read the new password from `file`")
	c.BoolVar(&stdin, "stdin", false, "read the current password from the first line of stdin and the new one from the second")
	if _, err := c.parse(a); err != nil {
		return err
	}
	if stdin && (currentFile != "" || newFile != "") {
		return c.usageErr("-stdin and -current-file/-new-file are exclusive")
	}
	req, err := a.readPasswords(stdin, currentFile, newFile)
	if err != nil {
		return err
	}
	if req.CurrentPassword == req.NewPassword {
		return errors.New("the new password is the current one")
	}
	ctx, client, err := a.connect(ctx, true)
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	if _, err := client.ChangePassword(cctx, req); err != nil {
		return err
	}
	// The server ended every session of the caller: the stored refresh token is dead.
	path, err := credentialsPath(a.getenv)
	if err != nil {
		return err
	}
	deleted, err := removeCredentials(path)
	if err != nil {
		return err
	}
	if a.output == "json" {
		return writeJSON(a.stdout, map[string]any{"password_changed": true, "sessions_ended": true, "credentials_file": path, "deleted": deleted})
	}
	_, err = fmt.Fprintln(a.stdout, "password changed; all your sessions were ended: run cmesh login with the new password")
	return err
}

// readPasswords reads the current and the new password from files, from the first two
// lines of stdin, or from the terminal, where the new one is typed twice since it is not
// echoed.
func (a *app) readPasswords(stdin bool, currentFile, newFile string) (*authv1.ChangePasswordRequest, error) {
	req := &authv1.ChangePasswordRequest{}
	var err error
	read := func(file, prompt string) (string, error) {
		switch {
		case file != "":
			return readPasswordFile(file)
		case stdin:
			return a.readLine()
		}
		return a.promptPassword(prompt)
	}
	if req.CurrentPassword, err = read(currentFile, "current password"); err != nil {
		return nil, fmt.Errorf("current password: %w", err)
	}
	if req.NewPassword, err = read(newFile, "new password"); err != nil {
		return nil, fmt.Errorf("new password: %w", err)
	}
	if _, tty := a.stdinTerminal(); tty && newFile == "" && !stdin {
		again, err := a.promptPassword("new password again")
		if err != nil {
			return nil, fmt.Errorf("new password: %w", err)
		}
		if again != req.NewPassword {
			return nil, errors.New("the new passwords do not match")
		}
	}
	return req, nil
}
