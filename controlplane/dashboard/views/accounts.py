"""Dashboard section: users and API tokens (admin). Every change goes through accounts' services.

A token's secret is shown once: in the response to the POST that created it (not stored in a
message, a redirect URL or anywhere else), with ``Cache-Control: no-store`` so the browser keeps
no copy of the page either.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path

from controlplane.accounts import tokens, users
from controlplane.accounts.models import ApiToken
from controlplane.accounts.roles import USER_ROLES, Role
from controlplane.dashboard.access import requires
from controlplane.refusals import Refused

ADMIN = Role.ADMIN


class PasswordFields(forms.Form):
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("password") and data.get("password2") and data["password"] != data["password2"]:
            self.add_error("password2", "the two passwords differ")
        return data


class UserCreateForm(PasswordFields):
    username = forms.CharField(label="Username", max_length=150)
    role = forms.ChoiceField(label="Role", choices=USER_ROLES, initial=Role.VIEWER)
    field_order = ["username", "role", "password", "password2"]


class RoleForm(forms.Form):
    role = forms.ChoiceField(label="New role", choices=USER_ROLES)


class TokenCreateForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100, help_text="letters, digits and _ . -")
    role = forms.ChoiceField(label="Role", choices=Role.choices, initial=Role.OPERATOR)


def refuse_into(form: forms.Form, exc: Refused) -> None:
    """A service's refusal shown beside the fields it names (the rest above the form)."""
    for field, problems in exc.fields.items():
        for problem in problems:
            form.add_error(field if field in form.fields else None, problem)
    if not exc.fields:
        form.add_error(None, exc.message)


def _user(user_id: int) -> Any:
    return get_object_or_404(users.people(), pk=user_id)


# --- users -----------------------------------------------------------------------------------
@requires(ADMIN)
def index(request: HttpRequest) -> HttpResponse:
    rows = [(user, users.role_label(user)) for user in users.people()]
    return render(request, "dashboard/accounts/users.html", {"rows": rows})


@requires(ADMIN)
def user_create(request: HttpRequest) -> HttpResponse:
    form = UserCreateForm(request.POST if request.method == "POST" else None)
    status = 200
    if form.is_bound:
        status = 422
        if form.is_valid():
            data = form.cleaned_data
            try:
                user = users.create_user(
                    data["username"], data["role"], data["password"], actor=request.actor
                )
            except Refused as exc:
                refuse_into(form, exc)
                status = exc.status
            else:
                messages.success(request, f"Created {user.get_username()} ({data['role']}).")
                return redirect("dashboard:user", user_id=user.pk)
    return render(request, "dashboard/accounts/user_new.html", {"form": form}, status=status)


def _user_page(request: HttpRequest, user: Any, status: int = 200, **forms_: Any) -> HttpResponse:
    role = users.role_label(user)
    context = {
        "person": user,
        "person_role": role,
        "is_me": user.pk == request.user.pk,
        "role_form": forms_.get("role_form") or RoleForm(initial={"role": role}),
        "password_form": forms_.get("password_form") or PasswordFields(),
        "active_errors": forms_.get("active_errors", []),
    }
    return render(request, "dashboard/accounts/user.html", context, status=status)


@requires(ADMIN)
def user_detail(request: HttpRequest, user_id: int) -> HttpResponse:
    return _user_page(request, _user(user_id))


@requires(ADMIN, post=True)
def user_role(request: HttpRequest, user_id: int) -> HttpResponse:
    user = _user(user_id)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            users.set_user_role(user, form.cleaned_data["role"], actor=request.actor)
        except Refused as exc:
            refuse_into(form, exc)
            return _user_page(request, user, exc.status, role_form=form)
        messages.success(request, f"{user.get_username()} is now {form.cleaned_data['role']}.")
        return redirect("dashboard:user", user_id=user.pk)
    return _user_page(request, user, 422, role_form=form)


@requires(ADMIN, post=True)
def user_password(request: HttpRequest, user_id: int) -> HttpResponse:
    user = _user(user_id)
    form = PasswordFields(request.POST)
    if form.is_valid():
        try:
            users.set_password(user, form.cleaned_data["password"], actor=request.actor)
        except Refused as exc:
            refuse_into(form, exc)
            return _user_page(request, user, exc.status, password_form=form)
        if user.pk == request.user.pk:
            update_session_auth_hash(request, user)  # stay logged in here; other sessions end
        messages.success(request, f"Set a new password for {user.get_username()}.")
        return redirect("dashboard:user", user_id=user.pk)
    return _user_page(request, user, 422, password_form=form)


@requires(ADMIN, post=True)
def user_active(request: HttpRequest, user_id: int) -> HttpResponse:
    user = _user(user_id)
    want = request.POST.get("active")
    if want not in ("0", "1"):
        return _user_page(request, user, 400, active_errors=["say active=1 or active=0"])
    try:
        if want == "1":
            users.reactivate(user, actor=request.actor)
        else:
            users.deactivate(user, actor=request.actor)
    except Refused as exc:
        return _user_page(request, user, exc.status, active_errors=[exc.message])
    state = "reactivated" if want == "1" else "deactivated"
    messages.success(request, f"{user.get_username()} is {state}.")
    return redirect("dashboard:user", user_id=user.pk)


# --- API tokens ------------------------------------------------------------------------------
def _tokens_page(
    request: HttpRequest, form: TokenCreateForm, status: int = 200, **extra: Any
) -> HttpResponse:
    context = {"form": form, "tokens": ApiToken.objects.order_by("revoked", "name"), **extra}
    response = render(request, "dashboard/accounts/tokens.html", context, status=status)
    if "secret" in extra:
        response["Cache-Control"] = "no-store"
    return response


@requires(ADMIN)
def token_list(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _tokens_page(request, TokenCreateForm())
    form = TokenCreateForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, form, 422)
    try:
        token, secret = tokens.create_token(
            form.cleaned_data["name"], form.cleaned_data["role"], actor=request.actor
        )
    except Refused as exc:
        refuse_into(form, exc)
        return _tokens_page(request, form, exc.status)
    # Rendered here, once: a redirect would have to carry the secret somewhere.
    return _tokens_page(request, TokenCreateForm(), 201, created=token, secret=secret)


@requires(ADMIN, post=True)
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id)
    tokens.revoke_token(token, actor=request.actor)
    messages.success(request, f"Revoked the token {token.name}; it no longer authenticates.")
    return redirect("dashboard:tokens")


urlpatterns = [
    path("", index, name="users"),
    path("new/", user_create, name="user-new"),
    path("<int:user_id>/", user_detail, name="user"),
    path("<int:user_id>/role", user_role, name="user-role"),
    path("<int:user_id>/password", user_password, name="user-password"),
    path("<int:user_id>/active", user_active, name="user-active"),
    path("tokens/", token_list, name="tokens"),
    path("tokens/<int:token_id>/revoke", token_revoke, name="token-revoke"),
]
