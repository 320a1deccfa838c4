package console

import (
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// Limits of the team screen's forms (auth has its own: emails of at most 254 characters,
// invitations valid for at most 30 days).
const (
	maxEmailFieldLen  = 254
	maxInvitationDays = 30
)

// tenantRoles are the roles a tenant's user or invitation can have, in the order offered.
var tenantRoles = []authv1.Role{authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_MANAGER, authv1.Role_ROLE_ANALYST,
	authv1.Role_ROLE_VIEWER, authv1.Role_ROLE_PRIVACY_OFFICER}

func (c *Console) teamRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"team", c.signedIn(c.teamPage))
	m.HandleFunc("POST "+Prefix+"team/users/{id}/role", c.signedIn(c.changeRole))
	m.HandleFunc("POST "+Prefix+"team/users/{id}/disable", c.signedIn(c.userAction("disable")))
	m.HandleFunc("POST "+Prefix+"team/users/{id}/unlock", c.signedIn(c.userAction("unlock")))
	m.HandleFunc("POST "+Prefix+"team/users/{id}/sessions/revoke", c.signedIn(c.userAction("sessions")))
	m.HandleFunc("POST "+Prefix+"team/invitations", c.signedIn(c.invite))
	m.HandleFunc("POST "+Prefix+"team/invitations/{id}/revoke", c.signedIn(c.revokeInvitation))
}

// roleChoice is one role of a select.
type roleChoice struct {
	Value, Label string
}

// userRow is one user of the list.
type userRow struct {
	ID, Email, Name, Role, RoleValue, State string
	Created, Updated                        *timestamppb.Timestamp
	Self                                    bool
}

// invitationRow is one invitation of the list.
type invitationRow struct {
	ID, Email, Role, State string
	Created, Expires       *timestamppb.Timestamp
}

// teamData is the team screen: users, and for those who manage users the invitations.
type teamData struct {
	Users          []userRow
	Next           string
	Invitations    []invitationRow
	NextInvitation string
	Roles          []roleChoice
	Manage         bool
}

func roleChoices() []roleChoice {
	out := make([]roleChoice, 0, len(tenantRoles))
	for _, r := range tenantRoles {
		out = append(out, roleChoice{Value: roleValue(r), Label: enumName(r.String(), "ROLE_")})
	}
	return out
}

// roleValue is a role as the forms post it ("admin", "privacy_officer").
func roleValue(r authv1.Role) string { return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_")) }

// parseRole reads a posted role: one of the tenant roles, else false.
func parseRole(v string) (authv1.Role, bool) {
	for _, r := range tenantRoles {
		if v == roleValue(r) {
			return r, true
		}
	}
	return authv1.Role_ROLE_UNSPECIFIED, false
}

func (c *Console) teamPage(rq *request) {
	token, ok := queryPageToken(rq)
	if !ok {
		return
	}
	invToken := rq.r.URL.Query().Get("invitations_page_token")
	if len(invToken) > maxPageTokenLen || strings.ContainsAny(invToken, "\x00\r\n") {
		rq.renderError(http.StatusBadRequest, "This page link is not valid. Go back to the first page.")
		return
	}
	users, err := c.api.Auth.ListUsers(rq.ctx, &authv1.ListUsersRequest{PageSize: adminPageSize, PageToken: token})
	if err != nil {
		rq.fail(err)
		return
	}
	d := teamData{Next: users.GetNextPageToken(), Roles: roleChoices(), Manage: rq.can("users.manage")}
	for _, u := range users.GetUsers() {
		d.Users = append(d.Users, userRow{ID: u.GetId(), Email: u.GetEmail(), Name: u.GetDisplayName(),
			Role: enumName(u.GetRole().String(), "ROLE_"), RoleValue: roleValue(u.GetRole()),
			State: enumName(u.GetState().String(), "STATE_"), Created: u.GetCreateTime(), Updated: u.GetUpdateTime(),
			Self: u.GetId() == rq.who.GetSubject()})
	}
	if d.Manage {
		inv, err := c.api.Auth.ListInvitations(rq.ctx, &authv1.ListInvitationsRequest{PageSize: adminPageSize, PageToken: invToken})
		if err != nil {
			rq.fail(err)
			return
		}
		d.NextInvitation = inv.GetNextPageToken()
		for _, i := range inv.GetInvitations() {
			d.Invitations = append(d.Invitations, invitationRow{ID: i.GetId(), Email: i.GetEmail(),
				Role: enumName(i.GetRole().String(), "ROLE_"), State: enumName(i.GetState().String(), "STATE_"),
				Created: i.GetCreateTime(), Expires: i.GetExpireTime()})
		}
	}
	rq.render("team", "Team", d)
}

// userID is the path's user id, or a 400 page.
func userID(rq *request) (string, bool) {
	id := rq.r.PathValue("id")
	if !validID(id) {
		rq.renderError(http.StatusBadRequest, "There is no such user.")
		return "", false
	}
	return id, true
}

func (c *Console) changeRole(rq *request) {
	id, ok := userID(rq)
	if !ok {
		return
	}
	role, ok := parseRole(rq.r.PostFormValue("role"))
	if !ok {
		rq.renderError(http.StatusBadRequest, "Choose one of the roles offered.")
		return
	}
	u, err := c.api.Auth.ChangeUserRole(rq.ctx, &authv1.ChangeUserRoleRequest{Id: id, Role: role})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"team", u.GetEmail()+" is now "+enumName(u.GetRole().String(), "ROLE_")+"; their earlier sign-ins stop working within seconds.")
}

// userAction is one of the team's one-button actions on a user.
func (c *Console) userAction(action string) handler {
	return func(rq *request) {
		id, ok := userID(rq)
		if !ok {
			return
		}
		var msg string
		switch action {
		case "disable":
			u, err := c.api.Auth.DisableUser(rq.ctx, &authv1.DisableUserRequest{Id: id})
			if err != nil {
				rq.fail(err)
				return
			}
			msg = u.GetEmail() + " was disabled: they cannot sign in, and their sessions end within seconds."
		case "unlock":
			u, err := c.api.Auth.UnlockUser(rq.ctx, &authv1.UnlockUserRequest{Id: id})
			if err != nil {
				rq.fail(err)
				return
			}
			msg = u.GetEmail() + " was unlocked: they can try to sign in again."
		case "sessions":
			r, err := c.api.Auth.RevokeUserSessions(rq.ctx, &authv1.RevokeUserSessionsRequest{Id: id})
			if err != nil {
				rq.fail(err)
				return
			}
			msg = "Signed the user out everywhere: " + strconv.FormatInt(r.GetRevokedSessions(), 10) + " sessions ended."
		}
		rq.done(Prefix+"team", msg)
	}
}

// invitationForm is the invite form as posted.
type invitationForm struct {
	Email  string
	Role   authv1.Role
	Expire *time.Time
}

// parseInvitationForm checks the invite form's sizes and shapes; whether the role is the
// caller's to grant is auth's decision.
func parseInvitationForm(email, role, days string, now time.Time) (invitationForm, string) {
	f := invitationForm{Email: strings.TrimSpace(email)}
	if f.Email == "" || len(f.Email) > maxEmailFieldLen {
		return f, "Enter the email address of the person to invite (at most 254 characters)."
	}
	if a, err := mail.ParseAddress(f.Email); err != nil || a.Address != f.Email {
		return f, "Enter a plain email address, like name@example.com."
	}
	r, ok := parseRole(role)
	if !ok {
		return f, "Choose one of the roles offered."
	}
	f.Role = r
	if days = strings.TrimSpace(days); days != "" {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > maxInvitationDays {
			return f, "An invitation can be valid for 1 to 30 days."
		}
		end := now.Add(time.Duration(n) * 24 * time.Hour)
		f.Expire = &end
	}
	return f, ""
}

func (c *Console) invite(rq *request) {
	f, problem := parseInvitationForm(rq.r.PostFormValue("email"), rq.r.PostFormValue("role"), rq.r.PostFormValue("days"), rq.now())
	if problem != "" {
		rq.renderError(http.StatusBadRequest, problem)
		return
	}
	inv := &authv1.Invitation{Email: f.Email, Role: f.Role}
	if f.Expire != nil {
		inv.ExpireTime = timestamppb.New(*f.Expire)
	}
	resp, err := c.api.Auth.CreateInvitation(rq.ctx, &authv1.CreateInvitationRequest{Invitation: inv})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.doneWithSecret(Prefix+"team", invitedMessage(resp.GetInvitation(), rq.sess.Tenant), resp.GetSecret())
}

// invitedMessage says how the invitee joins with the token shown beside it.
func invitedMessage(inv *authv1.Invitation, tenant string) string {
	msg := inv.GetEmail() + " was invited as " + enumName(inv.GetRole().String(), "ROLE_") +
		". Hand them this one-time invitation token privately; they join with “cmesh invitations accept -token <token> -name <name>” (or POST /v1/invitations:accept), then sign in"
	if tenant != "" {
		msg += " to the organization " + tenant
	}
	return msg + ". The token works until " + utcTime(inv.GetExpireTime()) + "."
}

func (c *Console) revokeInvitation(rq *request) {
	id := rq.r.PathValue("id")
	if !validID(id) {
		rq.renderError(http.StatusBadRequest, "There is no such invitation.")
		return
	}
	inv, err := c.api.Auth.RevokeInvitation(rq.ctx, &authv1.RevokeInvitationRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"team", "The invitation of "+inv.GetEmail()+" was revoked: its token no longer works.")
}
