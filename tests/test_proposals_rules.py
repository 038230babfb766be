"""The rules of proposals, handler by handler, on SQLite and PostgreSQL (fake context)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from bot.buttons import ButtonTemplate
from bot.clock import FixedClock
from bot.config import ChannelConfig, ProposalsConfig, Settings
from bot.dispatcher import Filled, Press
from bot.events import (
    Attachment,
    Author,
    ButtonPressed,
    ChatRef,
    EditMessage,
    MessageReceived,
    MessageRef,
    SendMessage,
)
from bot.handling import Role
from bot.richtext import FormattedText
from handlers import proposals
from handlers.proposals import ACT_BUTTON, REVIEW_BUTTON, Status
from storage.db import Database
from storage.models import NamedPost, Person, Proposal, ProposalEvent, ProposalSupport
from tests.kit import CHAT, MARIE, NOW, command, fake_context

PAUL_TG = Author(platform="telegram", user_id="7", display_name="Paul")
PAUL_DC = Author(platform="discord", user_id="70", display_name="Paul")
MODO = Author(platform="discord", user_id="99", display_name="Modo")
PROPOSALS_CHAT = ChatRef("discord", "555")


def _settings(threshold: int = 3, **values: Any) -> Settings:
    return Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        channels=[
            ChannelConfig(platform="discord", id="555", purpose="proposals"),
            ChannelConfig(platform="telegram", id="-100777", purpose="moderation"),
        ],
        proposals=ProposalsConfig(support_threshold=threshold, **values),
    )


async def _people(db: Database, n: int = 6) -> None:
    async with db.write() as session:
        for i in range(1, n + 1):
            session.add(Person(id=i, display_name=f"Personne {i}"))


async def _proposal(db: Database, status: Status = Status.PUBLISHED, **values: Any) -> int:
    """A proposal by person 1 (Marie, telegram:42); published unless it is a draft, awaits
    moderation or was refused, or ``published_at`` says otherwise."""
    row: dict[str, Any] = {
        "author_person_id": 1,
        "author_account_key": "telegram:42",
        "origin_chat_key": str(CHAT),
        "title": "Des bancs au square",
        "description": "Installer des bancs au square pour les anciens du quartier.",
        "neighbourhood": "Toute la commune",
        "theme": "Cadre de vie",
        "residents_bring": "Nous les peignons.",
        "town_asked": "Le bois des bancs.",
        "status": str(status),
        "published_at": (
            NOW if status not in (Status.DRAFT, Status.SUBMITTED, Status.REFUSED) else None
        ),
        **values,
    }
    async with db.write() as session:
        proposal = Proposal(**row)
        session.add(proposal)
        await session.flush()
        assert proposal.id is not None
        return proposal.id


def _press(template: ButtonTemplate, author: Author, chat: ChatRef = CHAT, **values: Any) -> Press:
    data = template.build(**values)
    event = ButtonPressed(
        chat=chat, author=author, at=NOW, data=data, message_id="5", interaction_id="i"
    )
    parsed = template.parse(data)
    assert parsed is not None
    return Press(event, parsed)


async def _get(db: Database, proposal_id: int) -> Proposal:
    async with db.read() as session:
        proposal = await session.get(Proposal, proposal_id)
        assert proposal is not None
        return proposal


async def _support(
    db: Database, proposal_id: int, author: Author, person_id: int, **options: Any
) -> tuple[str | None, list[Any]]:
    async with db.write() as session:
        press = _press(ACT_BUTTON, author, PROPOSALS_CHAT, id=proposal_id, do="support")
        ctx = fake_context(
            session, press.event, person_id=person_id, settings=options.pop("settings", _settings())
        )
        notice = await proposals.act(ctx, press)
        return notice, ctx.actions


async def test_a_person_supports_once_from_either_platform(db: Database) -> None:
    """Paul's Telegram and Discord accounts are one person: his support counts once."""
    await _people(db)
    proposal_id = await _proposal(db)
    notice, _ = await _support(db, proposal_id, PAUL_TG, person_id=2)
    assert notice == "Merci pour votre soutien (1)."
    notice, _ = await _support(db, proposal_id, PAUL_DC, person_id=2)
    assert notice == "Vous soutenez déjà cette proposition."
    notice, _ = await _support(db, proposal_id, PAUL_TG, person_id=2)
    assert notice == "Vous soutenez déjà cette proposition."
    proposal = await _get(db, proposal_id)
    assert proposal.supports == 1
    async with db.read() as session:
        rows = (await session.execute(sa.select(ProposalSupport))).scalars().all()
    assert [(r.person_id, r.account_key) for r in rows] == [(2, "telegram:7")]


async def test_the_author_and_unpublished_proposals_take_no_support(db: Database) -> None:
    await _people(db)
    published = await _proposal(db)
    notice, _ = await _support(db, published, MARIE, person_id=1)
    assert notice is not None and "auteur" in notice
    for status in (Status.WITHDRAWN, Status.DONE, Status.DECLINED):
        closed = await _proposal(db, status)
        notice, _ = await _support(db, closed, PAUL_TG, person_id=2)
        assert notice is not None and "ne recueille plus de soutiens" in notice, (status, notice)
    for status in (Status.DRAFT, Status.SUBMITTED, Status.REFUSED):
        hidden = await _proposal(db, status)
        notice, _ = await _support(db, hidden, PAUL_TG, person_id=2)
        assert notice == "Cette proposition n'existe pas.", status
    # A forged button for a proposal that never existed.
    notice, _ = await _support(db, 999_999, PAUL_TG, person_id=2)
    assert notice == "Cette proposition n'existe pas."
    async with db.read() as session:
        assert (await session.execute(sa.select(ProposalSupport))).first() is None


async def test_the_threshold_sends_it_to_the_council_once(db: Database) -> None:
    """The support that reaches the threshold moves it and notifies; later ones do not."""
    await _people(db)
    proposal_id = await _proposal(db)
    settings = _settings(threshold=2)
    _, first = await _support(db, proposal_id, PAUL_TG, person_id=2, settings=settings)
    assert (await _get(db, proposal_id)).status == "published"
    assert not [a for a in first if isinstance(a, SendMessage) and "conseil" in a.content.text]
    jeanne = Author(platform="discord", user_id="3", display_name="Jeanne")
    _, second = await _support(db, proposal_id, jeanne, person_id=3, settings=settings)
    proposal = await _get(db, proposal_id)
    assert (proposal.status, proposal.supports) == ("council", 2)
    told = [
        a for a in second if isinstance(a, SendMessage) and "transmise au conseil" in a.content.text
    ]
    # The author and the first supporter are told privately; the one who pressed is not.
    assert sorted(str(a.chat) for a in told) == ["telegram:42", "telegram:7"]
    staff = [
        a for a in second if isinstance(a, SendMessage) and a.chat == ChatRef("telegram", "-100777")
    ]
    assert staff and "/repondre" in staff[0].content.text
    edits = [a for a in second if isinstance(a, EditMessage)]
    assert edits == [] or all(a.post_key == proposals.post_key(proposal_id) for a in edits)
    third = Author(platform="discord", user_id="4", display_name="Luc")
    _, later = await _support(db, proposal_id, third, person_id=4, settings=settings)
    assert not [a for a in later if isinstance(a, SendMessage) and "transmise" in a.content.text]
    async with db.read() as session:
        kinds = (
            (
                await session.execute(
                    sa.select(ProposalEvent.kind).where(ProposalEvent.proposal_id == proposal_id)
                )
            )
            .scalars()
            .all()
        )
    assert kinds.count("council") == 1


async def test_only_a_moderator_publishes_and_only_once(db: Database) -> None:
    await _people(db)
    proposal_id = await _proposal(db, Status.SUBMITTED)
    async with db.write() as session:
        press = _press(REVIEW_BUTTON, PAUL_TG, id=proposal_id, do="approve")
        ctx = fake_context(session, press.event, person_id=2, settings=_settings())
        notice = await proposals.review_decision(ctx, press)
    assert notice == "Seule la modération peut publier ou refuser une proposition."
    assert (await _get(db, proposal_id)).status == "submitted"
    for expected in ("Publiée.", "Cette proposition a déjà été traitée."):
        async with db.write() as session:
            press = _press(REVIEW_BUTTON, MODO, id=proposal_id, do="approve")
            ctx = fake_context(
                session, press.event, person_id=5, roles={Role.MODERATOR}, settings=_settings()
            )
            notice = await proposals.review_decision(ctx, press)
            actions = ctx.actions
        assert notice == expected
    proposal = await _get(db, proposal_id)
    assert proposal.status == "published" and proposal.published_at is not None
    assert not [a for a in actions if isinstance(a, SendMessage)], "published twice"


async def test_only_council_staff_answer(db: Database) -> None:
    await _people(db)
    proposal_id = await _proposal(db, Status.COUNCIL)
    for roles in ({Role.RESIDENT}, {Role.MODERATOR}):
        async with db.write() as session:
            ctx = fake_context(
                session,
                command("repondre", f"{proposal_id} refusee budget"),
                person_id=5,
                roles=roles,
                settings=_settings(),
            )
            actions = await proposals.answer(ctx, ctx.event)  # type: ignore[arg-type]
        assert "Seuls les services de la mairie" in actions[0].content.text  # type: ignore[attr-defined]
    assert (await _get(db, proposal_id)).status == "council"
    async with db.write() as session:
        ctx = fake_context(
            session,
            command("repondre", f"{proposal_id} refusee budget"),
            person_id=5,
            roles={Role.COUNCIL},
            settings=_settings(),
        )
        await proposals.answer(ctx, ctx.event)  # type: ignore[arg-type]
    proposal = await _get(db, proposal_id)
    assert proposal.status == "declined"
    assert proposal.official_answer == _settings().proposals.answer_templates["budget"]


async def test_the_author_withdraws_only_before_the_answer(db: Database) -> None:
    await _people(db)
    open_id = await _proposal(db, Status.COUNCIL)
    answered = await _proposal(db, Status.ACCEPTED)
    async with db.write() as session:
        ctx = fake_context(session, command("retirer", str(open_id)), person_id=2)
        actions = await proposals.withdraw(ctx, ctx.event)  # type: ignore[arg-type]
    assert "Seul·e l'auteur·rice" in actions[0].content.text  # type: ignore[attr-defined]
    async with db.write() as session:
        ctx = fake_context(session, command("retirer", str(answered)), person_id=1)
        actions = await proposals.withdraw(ctx, ctx.event)  # type: ignore[arg-type]
    assert "ne peut plus être retirée" in actions[0].content.text  # type: ignore[attr-defined]
    async with db.write() as session:
        ctx = fake_context(session, command("retirer", f"#{open_id}"), person_id=1)
        await proposals.withdraw(ctx, ctx.event)  # type: ignore[arg-type]
    assert (await _get(db, open_id)).status == "withdrawn"
    notice, _ = await _support(db, open_id, PAUL_TG, person_id=2)
    assert notice is not None and "ne recueille plus de soutiens" in notice


async def test_author_news_at_most_every_three_days_staff_any_time(db: Database) -> None:
    await _people(db)
    proposal_id = await _proposal(db)
    async with db.write() as session:
        session.add(ProposalSupport(proposal_id=proposal_id, person_id=2, account_key="discord:70"))
    news = f"{proposal_id} Le bois est commandé, rendez-vous samedi."

    async def say(person_id: int, at_days: float, roles: set[Role] | None = None) -> str:
        async with db.write() as session:
            ctx = fake_context(
                session,
                command("nouvelles", news),
                person_id=person_id,
                clock=FixedClock(NOW + timedelta(days=at_days)),
                roles=roles or {Role.RESIDENT},
            )
            actions = await proposals.post_update(ctx, ctx.event)  # type: ignore[arg-type]
            sent = [a for a in ctx.actions if isinstance(a, SendMessage)]
            return actions[0].content.text + "|" + ",".join(str(a.chat) for a in sent)  # type: ignore[attr-defined]

    assert await say(1, 0) == "Nouvelles envoyées à 1 personne.|discord:dm:70"
    assert (await say(1, 2.9)).startswith(
        "Vous pouvez donner des nouvelles au plus une fois tous les 3 jours."
    )
    assert (await say(1, 3)).startswith("Nouvelles envoyées à 1 personne.")
    # Staff: any time, as official news, to the author as well.
    assert (
        await say(5, 3.1, {Role.COUNCIL})
        == "Nouvelles envoyées à 2 personnes.|telegram:42,discord:dm:70"
    )
    assert (await say(3, 10)).startswith("Seuls l'auteur·rice et l'équipe")


async def test_a_draft_is_the_authors_alone(db: Database) -> None:
    await _people(db)
    proposal_id = await _proposal(db, Status.DRAFT)
    for person_id, expected in (
        (2, "Seul·e l'auteur·rice peut décider de ce brouillon."),
        (1, "Envoyée."),
        (1, "Ce brouillon a déjà été envoyé ou abandonné."),
    ):
        async with db.write() as session:
            press = _press(proposals.DRAFT_BUTTON, MARIE, id=proposal_id, do="submit")
            ctx = fake_context(session, press.event, person_id=person_id, settings=_settings())
            assert await proposals.draft_decision(ctx, press) == expected
    proposal = await _get(db, proposal_id)
    assert proposal.status == "submitted" and proposal.submitted_at is not None


async def test_similar_proposals_are_shown_before_submitting(db: Database) -> None:
    """French lemmas in common: "composteurs partagés" meets "compost partagé"."""
    await _people(db)
    await _proposal(
        db,
        title="Un composteur partagé rue Lamartine",
        description="Des composteurs partagés pour les déchets de cuisine des voisins.",
    )
    await _proposal(db, title="Un terrain de pétanque", description="Refaire le terrain de boules.")
    async with db.write() as session:
        ctx = fake_context(session, command("proposer"), person_id=2, settings=_settings())
        filled = Filled(
            "proposal",
            {
                "title": "Composteurs partagés à la Cité 5",
                "description": "Installer des composteurs partagés pour les déchets de cuisine.",
                "neighbourhood": "0-toute-la-commune",
                "theme": "1-environnement-et-nature",
                "residents_bring": "Nous les entretenons.",
                "town_asked": "Les bacs et le broyat.",
                "budget": None,
            },
            {},
            ctx.event,
        )
        actions = await proposals.submit_form(ctx, filled)
    text = actions[0].content.text  # type: ignore[attr-defined]
    assert "Des propositions proches existent déjà" in text
    assert "Un composteur partagé rue Lamartine" in text
    assert "pétanque" not in text
    async with db.read() as session:
        draft = await session.get(Proposal, 3)
    assert draft is not None and (draft.neighbourhood, draft.theme) == (
        "Toute la commune",
        "Environnement et nature",
    )


async def test_a_photo_answering_the_carried_out_message_goes_under_the_proposal(
    db: Database,
) -> None:
    """The council answers its own "carried out" message with a photo: it is posted with the
    proposal wherever the proposal was published, fetched from where it was sent."""
    await _people(db)
    proposal_id = await _proposal(db, Status.DONE)
    staff_chat = ChatRef("telegram", "-100777")
    async with db.write() as session:
        session.add_all(
            [
                NamedPost(
                    key=proposals.photo_key(proposal_id),
                    chat_key=str(staff_chat),
                    message_ids=["70"],
                ),
                NamedPost(
                    key=proposals.post_key(proposal_id), chat_key="discord:555", message_ids=["9"]
                ),
                NamedPost(
                    key=proposals.post_key(proposal_id),
                    chat_key="telegram:-100888",
                    message_ids=["3"],
                ),
            ]
        )
    photo = Attachment(kind="photo", file_id="AgAD-photo", mime_type="image/jpeg")
    council = Author(platform="telegram", user_id="33", display_name="Mairie")

    async def send(
        reply_to: str | None, attachments: tuple[Attachment, ...], roles: set[Role]
    ) -> list[Any]:
        event = MessageReceived(
            chat=staff_chat,
            author=council,
            at=NOW,
            message_id="71",
            content=FormattedText.plain(""),
            reply_to=reply_to,
            attachments=attachments,
        )
        async with db.write() as session:
            ctx = fake_context(session, event, person_id=5, roles=roles, settings=_settings())
            answered = list(await proposals.closing_photo(ctx, event))
            # What the handler queued, then what it answered.
            return [*ctx.actions, *answered]

    # Not an answer to the invitation, or no photo: the handler stays out of it.
    assert await send("69", (photo,), {Role.COUNCIL}) == []
    assert await send("70", (), {Role.COUNCIL}) == []
    refused = await send("70", (photo,), {Role.RESIDENT})
    assert "Seuls les services de la mairie" in refused[0].content.text
    actions = await send("70", (photo,), {Role.COUNCIL})
    posted = [a for a in actions if isinstance(a, SendMessage) and a.attachments]
    assert sorted(str(a.chat) for a in posted) == ["discord:555", "telegram:-100888"]
    assert all(a.attachments == (photo,) for a in posted)
    assert all(a.origin == MessageRef(staff_chat, "71") for a in posted)
    assert posted[0].content.text.startswith("Proposition n°1 « Des bancs au square » réalisée")
    assert actions[-1].content.text == "Photo ajoutée à la proposition n°1."
