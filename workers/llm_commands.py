"""The CLI's model-management commands: factories, keys, llm, my-llms (the operations live in
``models.admin``; this module reads arguments and prints). No key is ever printed: at most
its last four characters."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from conf.errors import InvalidRequest
from models import admin
from models.db import session_scope
from models.defaults import clear_default_model, default_models, set_default_model
from models.tenants import TenantModel, delete_factory, delete_llm, resolve_tenant, set_llm_limits, set_llm_status
from tasks.limits import tenant_limits
from workers.output import out, print_json, table


def read_key(value: str | None) -> str | None:
    """``--api-key -`` reads the key from standard input (so it stays out of argv and history)."""
    if value == "-":
        key = sys.stdin.readline().strip()
        if not key:
            raise InvalidRequest("expected the API key on standard input")
        return key
    return value


def read_fields(pairs: list[str] | None) -> dict[str, str]:
    """``--field NAME=VALUE`` pairs; VALUE ``-`` reads a line from standard input, ``@PATH`` reads a
    file whole (a service-account JSON key)."""
    fields: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest(
                "--field takes NAME=VALUE (an argument had no NAME=; it is not repeated here, in case it was a secret)"
            )
        if value == "-":
            value = sys.stdin.readline().strip()
        elif value.startswith("@"):
            try:
                value = Path(value[1:]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise InvalidRequest(f"--field {name}: cannot read {value[1:]}: {exc.strerror}") from None
        fields[name.strip()] = value
    return fields


def model_json(tm: TenantModel) -> dict[str, Any]:
    return {
        "model": tm.full_name,
        "factory": tm.factory,
        "type": tm.model_type,
        "status": tm.status,
        "used_tokens": tm.used_tokens,
        "api_base": tm.api_base,
        "max_tokens": tm.max_tokens,
        "has_key": tm.has_key,
        "key_hint": tm.key_hint,
        "key_state": tm.key_state,
        "key_checked_at": tm.key_checked_at,
        "key_error": tm.key_error,
        "limits": {"rpm": tm.rpm_limit, "tpm": tm.tpm_limit, "max_concurrency": tm.max_concurrency},
    }


def _limit_args(args: argparse.Namespace) -> dict[str, int | None]:
    return {"rpm": args.rpm, "tpm": args.tpm, "max_concurrency": args.max_concurrency}


def factories(args: argparse.Namespace) -> None:
    rows = admin.list_factories()
    if args.json:
        print_json(rows)
        return
    if args.markdown:
        sys.stdout.write(factory_markdown(rows))
        return
    table(
        "factories",
        ["factory", "models", "supported", "unsupported", "credential fields", "internal"],
        [
            [
                r["name"],
                r["models"],
                ",".join(r["supported_types"]) or "-",
                ",".join(r["unsupported_types"]) or "-",
                ",".join(r["credential_fields"]),
                "yes" if r["internal"] else "",
            ]
            for r in rows
        ],
    )


def keys_set(args: argparse.Namespace) -> None:
    saved = admin.set_api_key(
        args.tenant,
        args.factory,
        read_key(args.api_key),
        fields=read_fields(args.field),
        base_url=args.base_url,
        check=not args.skip_check,
    )
    checked = saved.checked_with.model if saved.checked_with else None
    if args.json:
        print_json(
            {
                "factory": saved.factory,
                "checked_with": checked,
                "key_state": "valid" if checked else "unchecked",
                "models": [{"model": m, "type": t} for m, t in saved.models],
            }
        )
    else:
        how = f"accepted by {checked}" if checked else "saved without a check"
        out.print(f"{saved.factory}: key {how}; {len(saved.models)} models configured")


def keys_rotate(args: argparse.Namespace) -> None:
    report = admin.rotate_keys()
    if args.json:
        print_json({"rotated": report.rotated, "current": report.current})
    else:
        out.print(f"{report.rotated} stored keys re-encrypted under the newest key; {report.current} already were")


def llm_add(args: argparse.Namespace) -> None:
    tm = admin.add_llm(
        args.tenant,
        args.model,
        args.model_type,
        read_key(args.api_key),
        fields=read_fields(args.field),
        base_url=args.base_url,
        max_tokens=args.max_tokens,
        check=not args.skip_check,
        limits=_limit_args(args),
    )
    if args.json:
        print_json(model_json(tm))
    else:
        out.print(f"{tm.full_name} ({tm.model_type}): {tm.status}, key {tm.key_state}")


def llm_change(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant)
        if args.action == "delete":
            delete_llm(session, tenant_id, args.model, args.model_type)
            tm = None
        else:
            tm = set_llm_status(session, tenant_id, args.model, args.model_type, enabled=args.action == "enable")
    if args.json:
        print_json(model_json(tm) if tm else {"model": args.model, "type": args.model_type, "deleted": True})
    else:
        out.print(f"{args.model} ({args.model_type}): {'deleted' if tm is None else tm.status}")


def llm_set_limits(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tm = set_llm_limits(
            session, resolve_tenant(session, args.tenant), args.model, args.model_type, **_limit_args(args)
        )
    if args.json:
        print_json(model_json(tm))
        return
    shown = [
        f"{name} {value}"
        for name, value in (("rpm", tm.rpm_limit), ("tpm", tm.tpm_limit), ("max concurrency", tm.max_concurrency))
        if value
    ]
    out.print(f"{tm.full_name} ({tm.model_type}): {', '.join(shown) or 'no limits of its own'}")


def limits(args: argparse.Namespace) -> None:
    rows = tenant_limits(args.tenant, args.runtime.limiter)
    if args.json:
        print_json(rows)
        return

    def per_min(d: dict[str, Any]) -> str:
        return " ".join(f"{v} {k}" for k, v in d.items() if v and k != "rpm_source") or "-"

    table(
        "limits",
        ["model", "type", "key", "configured", "advertised", "in force", "from", "req/min now", "in flight", "paused"],
        [
            [
                r["model"],
                r["type"],
                r["key"],
                per_min(r.get("configured") or {}),
                per_min(r.get("advertised") or {}),
                per_min(r.get("in_force") or {}),
                (r.get("in_force") or {}).get("rpm_source") or "-",
                r.get("requests_per_minute_now", "-"),
                r.get("calls_in_progress", "-"),
                f"{r['paused_for']}s: {r['pause_reason']}" if r.get("paused_for") else (r.get("error") or ""),
            ]
            for r in rows
        ],
    )


def llm_delete_factory(args: argparse.Namespace) -> None:
    with session_scope() as session:
        count = delete_factory(session, resolve_tenant(session, args.tenant), args.factory)
    if args.json:
        print_json({"factory": args.factory, "deleted": count})
    else:
        out.print(f"{args.factory}: {count} models deleted")


def llm_default(args: argparse.Namespace) -> None:
    """With --model or --clear, change the default of --type; then print the tenant's defaults."""
    if (args.model or args.clear) and not args.model_type:
        raise InvalidRequest("--model and --clear need --type")
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant)
        if args.model:
            set_default_model(session, tenant_id, args.model_type, args.model)
        elif args.clear:
            clear_default_model(session, tenant_id, args.model_type)
        defaults = default_models(session, tenant_id)
    if args.json:
        print_json(defaults)
    else:
        table("default models", ["type", "model"], [[t, m] for t, m in defaults.items()])


def llm_list(args: argparse.Namespace) -> None:
    with session_scope() as session:
        rows = admin.list_models(session, resolve_tenant(session, args.tenant), args.model_type)
    if args.json:
        print_json(rows)
        return
    table(
        "catalog models",
        ["model", "type", "max tokens", "tools", "supported", "available"],
        [
            [
                r["model"],
                r["type"],
                r["max_tokens"],
                "yes" if r["is_tools"] else "",
                "yes" if r["supported"] else "no",
                "yes" if r["available"] else "",
            ]
            for r in rows
        ],
    )


def my_llms(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant)
        grouped = admin.my_llms(session, tenant_id)
        defaults = default_models(session, tenant_id)
    if args.json:
        print_json(
            {
                factory: [{**model_json(m), "default": defaults.get(m.model_type) == m.full_name} for m in models]
                for factory, models in grouped.items()
            }
        )
        return
    columns = ["factory", "model", "type", "status", "used tokens", "key", "default"]
    if args.details:
        columns += ["key state", "last validated", "last error", "base URL", "max tokens"]
    rows = []
    for factory, models in grouped.items():
        for m in models:
            key = f"…{m.key_hint}" if m.key_hint else ("set" if m.has_key else "none")
            default = "yes" if defaults.get(m.model_type) == m.full_name else ""
            row: list[Any] = [factory, m.llm_name, m.model_type, m.status, f"{m.used_tokens:,}", key, default]
            if args.details:
                row += [m.key_state, m.key_checked_at, m.key_error, m.api_base or "(default)", m.max_tokens]
            rows.append(row)
    table("models", columns, rows)


MARKDOWN_TYPES = ("chat", "embedding", "rerank", "image2text", "speech2text", "tts")


def factory_markdown(rows: list[dict[str, Any]]) -> str:
    """The README's factory x model type table: ✅ supported; ❌ the catalog lists such models but
    modelyard has no provider class for them; · neither (the factory offers no such models)."""
    lines = [
        "| factory | " + " | ".join(MARKDOWN_TYPES) + " | other catalog types |",
        "|---|" + "---|" * (len(MARKDOWN_TYPES) + 1),
    ]
    for r in sorted(rows, key=lambda r: r["name"].lower()):
        cells = [
            "✅" if t in r["supported_types"] else "❌" if t in r["catalog_types"] else "·" for t in MARKDOWN_TYPES
        ]
        other = ", ".join(f"{t} ❌" for t in r["unsupported_types"] if t not in MARKDOWN_TYPES)
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {other} |")
    return "\n".join(lines) + "\n"
