package grpcapi

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// CreateInvitation implements authv1.AuthServiceServer.
func (s *Server) CreateInvitation(ctx context.Context, req *authv1.CreateInvitationRequest) (*authv1.CreateInvitationResponse, error) {
	in := req.GetInvitation()
	inv, token, err := s.svc.CreateInvitation(ctx, authn.FromContext(ctx), in.GetEmail(), roleFromProto(in.GetRole()), expireOf(in))
	if err != nil {
		return nil, err
	}
	return &authv1.CreateInvitationResponse{Invitation: invitationToProto(inv), Secret: token}, nil
}

// CreateTenantInvitation implements authv1.AuthServiceServer.
func (s *Server) CreateTenantInvitation(ctx context.Context, req *authv1.CreateTenantInvitationRequest) (*authv1.CreateInvitationResponse, error) {
	in := req.GetInvitation()
	inv, token, err := s.svc.CreateTenantInvitation(ctx, authn.FromContext(ctx), req.GetTenantId(), in.GetEmail(), roleFromProto(in.GetRole()), expireOf(in))
	if err != nil {
		return nil, err
	}
	return &authv1.CreateInvitationResponse{Invitation: invitationToProto(inv), Secret: token}, nil
}

// ListInvitations implements authv1.AuthServiceServer.
func (s *Server) ListInvitations(ctx context.Context, req *authv1.ListInvitationsRequest) (*authv1.ListInvitationsResponse, error) {
	page, err := auth.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	is, next, err := s.svc.ListInvitations(ctx, authn.FromContext(ctx), page)
	if err != nil {
		return nil, err
	}
	resp := &authv1.ListInvitationsResponse{NextPageToken: next}
	for _, i := range is {
		resp.Invitations = append(resp.Invitations, invitationToProto(i))
	}
	return resp, nil
}

// RevokeInvitation implements authv1.AuthServiceServer.
func (s *Server) RevokeInvitation(ctx context.Context, req *authv1.RevokeInvitationRequest) (*authv1.Invitation, error) {
	inv, err := s.svc.RevokeInvitation(ctx, authn.FromContext(ctx), req.GetId())
	return invitationToProto(inv), err
}

// AcceptInvitation implements authv1.AuthServiceServer.
func (s *Server) AcceptInvitation(ctx context.Context, req *authv1.AcceptInvitationRequest) (*authv1.AcceptInvitationResponse, error) {
	a, err := s.svc.AcceptInvitation(ctx, req.GetToken(), req.GetDisplayName(), req.GetPassword())
	if err != nil {
		return nil, err
	}
	return &authv1.AcceptInvitationResponse{User: userToProto(a.User), TenantSlug: a.TenantSlug}, nil
}

func expireOf(in *authv1.Invitation) *time.Time {
	if in.GetExpireTime() == nil {
		return nil
	}
	t := in.GetExpireTime().AsTime()
	return &t
}

var invitationStates = map[auth.InvitationState]authv1.Invitation_State{
	auth.InvitationPending:  authv1.Invitation_STATE_PENDING,
	auth.InvitationAccepted: authv1.Invitation_STATE_ACCEPTED,
	auth.InvitationRevoked:  authv1.Invitation_STATE_REVOKED,
	auth.InvitationExpired:  authv1.Invitation_STATE_EXPIRED,
}

func invitationToProto(i auth.Invitation) *authv1.Invitation {
	if i.ID == "" {
		return nil
	}
	return &authv1.Invitation{
		Id: i.ID, TenantId: i.TenantID, Email: i.Email, Role: roleToProto(i.Role), State: invitationStates[i.State],
		Creator: i.Creator, CreateTime: timestamppb.New(i.CreateTime), ExpireTime: timestamppb.New(i.ExpireTime),
		AcceptTime: optionalTime(i.AcceptTime), RevokeTime: optionalTime(i.RevokeTime), UserId: i.UserID,
	}
}
