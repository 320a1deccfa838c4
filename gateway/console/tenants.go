package console

import (
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// Limits of the tenants screen's form (auth's rules: a slug of 3-40 of a-z, 0-9 and '-',
// a display name of 1-200 characters).
const (
	maxSlugLen        = 40
	maxDisplayNameLen = 200
)

func (c *Console) tenantRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"tenants", c.signedIn(c.tenantsPage))
	m.HandleFunc("POST "+Prefix+"tenants", c.signedIn(c.createTenant))
	m.HandleFunc("POST "+Prefix+"tenants/{id}/suspend", c.signedIn(c.suspendTenant))
	m.HandleFunc("POST "+Prefix+"tenants/{id}/invitations", c.signedIn(c.inviteTenantAdmin))
}

// tenantRow is one tenant of the list.
type tenantRow struct {
	ID, Slug, Name, State string
	Created               *timestamppb.Timestamp
}

// tenantsData is the tenants screen.
type tenantsData struct {
	Tenants []tenantRow
	Next    string
}

func (c *Console) tenantsPage(rq *request) {
	token, ok := queryPageToken(rq)
	if !ok {
		return
	}
	resp, err := c.api.Auth.ListTenants(rq.ctx, &authv1.ListTenantsRequest{PageSize: adminPageSize, PageToken: token})
	if err != nil {
		rq.fail(err)
		return
	}
	d := tenantsData{Next: resp.GetNextPageToken()}
	for _, t := range resp.GetTenants() {
		d.Tenants = append(d.Tenants, tenantRow{ID: t.GetId(), Slug: t.GetSlug(), Name: t.GetDisplayName(),
			State: enumName(t.GetState().String(), "STATE_"), Created: t.GetCreateTime()})
	}
	rq.render("tenants", "Tenants", d)
}

// tenantForm is the create form as posted: the tenant and, optionally, its first admin.
type tenantForm struct {
	Slug, Name, AdminEmail string
}

// parseTenantForm checks the create form's sizes and shapes; the slug's rules are auth's.
func parseTenantForm(slug, name, adminEmail string) (tenantForm, string) {
	f := tenantForm{Slug: strings.TrimSpace(slug), Name: strings.TrimSpace(name), AdminEmail: strings.TrimSpace(adminEmail)}
	if f.Slug == "" || len(f.Slug) > maxSlugLen {
		return f, "Enter the organization's sign-in name: 3 to 40 of a-z, 0-9 and '-'."
	}
	if f.Name == "" || !utf8.ValidString(f.Name) || utf8.RuneCountInString(f.Name) > maxDisplayNameLen {
		return f, "Enter a display name of 1 to 200 characters."
	}
	if f.AdminEmail != "" {
		if _, problem := parseInvitationForm(f.AdminEmail, roleValue(authv1.Role_ROLE_ADMIN), "", time.Time{}); problem != "" {
			return f, "The first administrator's email: " + problem
		}
	}
	return f, ""
}

func (c *Console) createTenant(rq *request) {
	f, problem := parseTenantForm(rq.r.PostFormValue("slug"), rq.r.PostFormValue("name"), rq.r.PostFormValue("admin_email"))
	if problem != "" {
		rq.renderError(http.StatusBadRequest, problem)
		return
	}
	t, err := c.api.Auth.CreateTenant(rq.ctx, &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: f.Slug, DisplayName: f.Name}})
	if err != nil {
		rq.fail(err)
		return
	}
	if f.AdminEmail == "" {
		rq.done(Prefix+"tenants", "The organization “"+t.GetSlug()+"” was created. Invite its first administrator from this page.")
		return
	}
	// The tenant exists now whatever happens to the invitation: say so if it fails.
	inv, err := c.api.Auth.CreateTenantInvitation(rq.ctx, &authv1.CreateTenantInvitationRequest{TenantId: t.GetId(),
		Invitation: &authv1.Invitation{Email: f.AdminEmail, Role: authv1.Role_ROLE_ADMIN}})
	if err != nil {
		_, msg := explain(err)
		rq.c.sessions.setFlash(rq.w, flash{Kind: "error", Text: "The organization “" + t.GetSlug() +
			"” was created, but its administrator was not invited: " + msg})
		http.Redirect(rq.w, rq.r, Prefix+"tenants", http.StatusSeeOther)
		return
	}
	rq.doneWithSecret(Prefix+"tenants", "The organization “"+t.GetSlug()+"” was created. "+invitedMessage(inv.GetInvitation(), t.GetSlug()), inv.GetSecret())
}

// inviteTenantAdmin invites an administrator to an existing tenant (its first one, or a new
// one when all have left).
func (c *Console) inviteTenantAdmin(rq *request) {
	id := rq.r.PathValue("id")
	if !validID(id) {
		rq.renderError(http.StatusBadRequest, "There is no such organization.")
		return
	}
	f, problem := parseInvitationForm(rq.r.PostFormValue("email"), roleValue(authv1.Role_ROLE_ADMIN), "", rq.now())
	if problem != "" {
		rq.renderError(http.StatusBadRequest, problem)
		return
	}
	inv, err := c.api.Auth.CreateTenantInvitation(rq.ctx, &authv1.CreateTenantInvitationRequest{TenantId: id,
		Invitation: &authv1.Invitation{Email: f.Email, Role: authv1.Role_ROLE_ADMIN}})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.doneWithSecret(Prefix+"tenants", invitedMessage(inv.GetInvitation(), ""), inv.GetSecret())
}

func (c *Console) suspendTenant(rq *request) {
	id := rq.r.PathValue("id")
	if !validID(id) {
		rq.renderError(http.StatusBadRequest, "There is no such organization.")
		return
	}
	t, err := c.api.Auth.SuspendTenant(rq.ctx, &authv1.SuspendTenantRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"tenants", "The organization “"+t.GetSlug()+"” was suspended: its users and keys stop working within seconds.")
}
