"""``modelyard api`` and ``modelyard token create|list|revoke``. A token is printed once, when
it is made; listings show its name and last four characters, never the token."""

from __future__ import annotations

import argparse
import sys

from models.db import session_scope
from models.tenants import resolve_tenant
from models.tokens import create_token, list_tokens, revoke_token
from workers.output import out, print_json, table


def api(args: argparse.Namespace) -> None:
    from workers.api.server import serve

    serve(args.runtime, args.host, args.port)


def _scopes(values: list[str] | None) -> list[str] | None:
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()] or None


def token_create(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant) if args.tenant else None
        token, row = create_token(session, tenant_id, args.name, _scopes(args.scope))
    if args.json:
        print_json({"token": token, **row})
    else:
        sys.stdout.write(token + "\n")
        out.print(
            f"(token {row['id']} '{row['name']}', scopes {','.join(row['scopes'])}: shown this once; store it now)",
            markup=False,
            style="dim",
        )


def token_list(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant) if args.tenant else None
        rows = list_tokens(session, tenant_id)
    if args.json:
        print_json(rows)
        return
    table(
        "API tokens",
        ["id", "name", "tenant", "scopes", "ends with", "created", "last used", "revoked"],
        [
            [
                r["id"],
                r["name"],
                r["tenant_id"] or "(operator)",
                ",".join(r["scopes"]),
                f"…{r['hint']}",
                r["created_at"],
                r["last_used_at"] or "",
                "yes" if r["revoked"] else "",
            ]
            for r in rows
        ],
    )


def token_revoke(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant) if args.tenant else None
        row = revoke_token(session, args.token, tenant_id)
    if args.json:
        print_json(row)
    else:
        out.print(f"token {row['id']} '{row['name']}' revoked", markup=False)
