"""Fifty-fifty proposals, tried as residents, moderators and council staff use them."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from bot.config import ChannelConfig, ProposalsConfig, RolesConfig, Settings
from bot.platforms.console import Posted
from storage.models import Account, Proposal, ProposalEvent
from tests.forum import Forum

MODERATION = "con:moderation"
PROPOSALS = "con:propositions"


def _settings(tmp_path: Path, *, threshold: int = 2) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'forum.db'}",
        channels=[
            ChannelConfig(platform="console", id=MODERATION, purpose="moderation"),
            ChannelConfig(platform="console", id=PROPOSALS, purpose="proposals"),
            ChannelConfig(platform="console", id="con:nord", neighbourhood="Cité 5"),
        ],
        roles=RolesConfig(moderators=["console:modo"], council=["console:mairie"]),
        proposals=ProposalsConfig(support_threshold=threshold),
    )


def _button(posted: list[Posted], prefix: str) -> str:
    for post in reversed(posted):
        for _label, data in post.buttons:
            if data.startswith(prefix):
                return data
    raise AssertionError(f"no button {prefix!r} in {posted!r}")


async def _fill_form(forum: Forum, name: str = "Marie") -> list[Posted]:
    await forum.say("con:nord /proposer", as_name=name)
    await forum.say("Des bacs à compost au square", as_name=name)
    await forum.say(
        "Installer trois bacs à compost partagés au square de la Cité 5, pour les déchets verts.",
        as_name=name,
    )
    await forum.say("Cité 5", as_name=name)
    await forum.say("Environnement et nature", as_name=name)
    await forum.say("Nous construisons les bacs et les entretenons.", as_name=name)
    await forum.say("Le bois et un emplacement au square.", as_name=name)
    return await forum.say("1 500 €", as_name=name)


async def test_the_whole_lifecycle_as_one_conversation(tmp_path: Path) -> None:
    """Proposed, submitted, published, supported to the threshold, answered, carried out."""
    async with Forum(_settings(tmp_path)) as forum:
        draft = await _fill_form(forum)
        assert "Proposition n°1" in draft[0].text, draft
        await forum.say(f":clic {_button(draft, 'proposal:1:draft:submit')}", as_name="Marie")
        review = [p for p in forum.console.state.posted if p.chat == MODERATION]
        assert review and "attend la modération" in review[-1].text
        await forum.say(
            f"{MODERATION} :clic {_button(review, 'proposal:1:review:approve')}", as_name="Modo"
        )
        published = [p for p in forum.console.state.posted if p.chat == PROPOSALS]
        assert len(published) == 1 and "Des bacs à compost" in published[0].text
        support = _button(published, "proposal:1:support")
        await forum.say(f"{PROPOSALS} :clic {support}", as_name="Paul")
        await forum.say(f"{PROPOSALS} :clic {support}", as_name="Paul")
        await forum.say(f"{PROPOSALS} :clic {support}", as_name="Jeanne")
        async with forum.db.read() as session:
            proposal = await session.get(Proposal, 1)
            assert proposal is not None
            assert (proposal.status, proposal.supports) == ("council", 2)
        await forum.say(f"{MODERATION} /repondre 1 acceptee", as_name="Mairie")
        await forum.say("Le bois, la livraison et une plaque.", as_name="Mairie")
        await forum.say("printemps 2027", as_name="Mairie")
        answer = await forum.say(
            "Merci pour cette belle idée, nous la soutenons.", as_name="Mairie"
        )
        staff = [p.text for p in answer if p.chat == MODERATION]
        assert staff == ["Réponse enregistrée pour la proposition n°1 ; 3 personnes prévenues."], (
            answer
        )
        await forum.say(f"{MODERATION} /avancement 1 en_cours", as_name="Mairie")
        await forum.say(
            f"{MODERATION} /avancement 1 realisee Les trois bacs sont installés et utilisés.",
            as_name="Mairie",
        )
        invitation = [p for p in forum.console.state.posted if p.chat == MODERATION][-1]
        assert invitation.text == (
            "Proposition n°1 : 3 personnes prévenues.\nPour ajouter une photo de la réalisation, "
            "répondez à ce message avec la photo."
        )
        async with forum.db.read() as session:
            proposal = await session.get(Proposal, 1)
            assert proposal is not None and proposal.status == "done"
            kinds = (
                (await session.execute(sa.select(ProposalEvent.kind).order_by(ProposalEvent.id)))
                .scalars()
                .all()
            )
        assert kinds == [
            "created",
            "submitted",
            "published",
            "council",
            "accepted",
            "in_progress",
            "done",
        ]
        # Each person hears of each step once, privately; the one who acted is not told.
        heard: dict[str, list[str]] = {}
        for post in forum.console.state.posted:
            if post.chat.startswith("dm:"):
                heard.setdefault(post.chat, []).append(post.text.split("\n")[0])
    steps = {
        "published": "Votre proposition n°1 « Des bacs à compost au square » est publiée : les "
        "habitants peuvent maintenant la soutenir.",
        "council": "La proposition n°1 « Des bacs à compost au square » a atteint 2 soutiens : "
        "elle est transmise au conseil municipal, dont la réponse sera partagée ici.",
        "accepted": "Proposition n°1 « Des bacs à compost au square » : acceptée.",
        "in_progress": "Proposition n°1 « Des bacs à compost au square » : en cours.",
        "done": "Proposition n°1 « Des bacs à compost au square » : réalisée.",
    }
    later = [steps["accepted"], steps["in_progress"], steps["done"]]
    assert heard == {
        "dm:marie": [steps["published"], steps["council"], *later],
        "dm:paul": [steps["council"], *later],
        "dm:jeanne": later,
    }


async def test_bad_input_at_every_step_gets_french_and_keeps_the_answers(tmp_path: Path) -> None:
    """Each refused answer is explained in French and asked again; earlier ones are kept."""
    async with Forum(_settings(tmp_path)) as forum:
        assert "question 1/7" in (await forum.answer("con:nord /proposer"))
        assert (await forum.answer("Bancs")).startswith("Trop court : au moins 10 caractères.")
        assert "question 2/7" in await forum.answer("Des bancs au square Lamartine")
        assert (await forum.answer("court")).startswith("Trop court : au moins 30 caractères.")
        assert "question 3/7" in await forum.answer(
            "Installer quatre bancs au square Lamartine, à l'ombre des tilleuls."
        )
        assert (await forum.answer("Sur la lune")).startswith("Choisissez l'un des boutons")
        # Typed without its accent, a neighbourhood is still recognised.
        question = await forum.say("cite 5")
        assert "question 4/7" in question[0].text
        theme = _button(question, "form:proposal:3:0-cadre")
        assert "question 5/7" in (await forum.say(f":clic {theme}"))[0].text
        assert (await forum.answer("-")).startswith("Cette question demande une réponse.")
        assert "question 6/7" in await forum.answer("Nous poncerons et peindrons les bancs.")
        assert "question 7/7" in await forum.answer("Le bois et la pose des bancs.")
        assert (await forum.answer("beaucoup")).startswith("Indiquez un montant en euros")
        draft = await forum.answer("-")
        assert "Des bancs au square Lamartine" in draft and "Budget" not in draft
        async with forum.db.read() as session:
            proposal = await session.get(Proposal, 1)
    assert proposal is not None
    assert (proposal.neighbourhood, proposal.theme, proposal.budget_euros) == (
        "Cité 5",
        "Cadre de vie",
        None,
    )
    assert proposal.status == "draft"


async def test_a_restart_in_the_middle_of_the_form_resumes_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with Forum(settings) as forum:
        await forum.say("con:nord /proposer")
        await forum.say("Des bacs à fleurs devant l'école")
        assert "question 3/7" in await forum.answer(
            "Des bacs à fleurs devant l'école Basly, plantés par les enfants et les parents."
        )
    async with Forum(settings) as forum:
        # The same chat after the restart: the form goes on at question 3.
        assert "question 4/7" in await forum.answer("con:nord Cité 5")
        await forum.say("Cadre de vie")
        await forum.say("Les parents plantent et arrosent.")
        await forum.say("La terre et les bacs.")
        draft = await forum.answer("300")
    assert "Des bacs à fleurs devant l'école" in draft and "300 €" in draft


async def _published(forum: Forum, count: int) -> None:
    """``count`` proposals by Marie, already published (the form is tried elsewhere)."""
    await forum.say("con:nord bonjour", as_name="Marie")
    async with forum.db.write() as session:
        author = (
            await session.execute(
                sa.select(Account.person_id).where(Account.platform_user_id == "marie")
            )
        ).scalar_one()
        for i in range(count):
            session.add(
                Proposal(
                    author_person_id=author,
                    author_account_key="console:marie",
                    origin_chat_key="console:con:nord",
                    title=f"Projet {i + 1} pour la Cité 5",
                    description="Une description assez longue pour être acceptée.",
                    neighbourhood="Cité 5",
                    theme="Environnement et nature",
                    residents_bring="Nous apportons notre temps.",
                    town_asked="Un peu de matériel.",
                    status="published",
                    published_at=forum.clock.now(),
                )
            )
    for i in range(count):
        # Posted as a moderator would have: the buttons exist in the proposals channel.
        await forum.say(f"{PROPOSALS} /proposition {i + 1}", as_name="Modo")


async def test_browsing_filters_pages_and_one_proposal(tmp_path: Path) -> None:
    async with Forum(_settings(tmp_path, threshold=50)) as forum:
        await _published(forum, 6)
        await forum.say(f"{PROPOSALS} :clic proposal:2:support", as_name="Paul")
        first = await forum.say("con:nord /propositions", as_name="Paul")
        assert first[0].text.startswith("Propositions (6), page 1/2 :")
        assert "n°6 " in first[0].text and "n°1 " not in first[0].text
        nxt = _button(first, "proposals:1:new:")
        second = await forum.say(f":clic {nxt}", as_name="Paul")
        assert second[-1].text.startswith("Propositions (6), page 2/2 :")
        assert "n°1 " in second[-1].text
        top = await forum.say("/propositions populaires cite 5", as_name="Paul")
        assert top[0].text.split("\n")[1].startswith("n°2 "), top[0].text
        none = await forum.answer("/propositions Mobilité", as_name="Paul")
        assert none == "Aucune proposition ne correspond. /proposer pour écrire la première !"
        odd = await forum.answer("/propositions zzz", as_name="Paul")
        assert odd.startswith("Pas compris : zzz.")
        one = await forum.answer("/proposition 2", as_name="Paul")
        assert "Soutiens : 1 sur les 50 nécessaires" in one and "Historique :" in one
        assert await forum.answer("/proposition 99", as_name="Paul") == (
            "Il n'y a pas de proposition n°99."
        )
        assert await forum.answer("/proposition deux", as_name="Paul") == (
            "Utilisation : /proposition <numéro>"
        )
        mine = await forum.answer("/mes_propositions", as_name="Marie")
        assert mine.startswith("Vos propositions :") and mine.count("\n") == 6
        assert (await forum.answer("/mes_propositions", as_name="Paul")).startswith(
            "Vous n'avez encore écrit aucune proposition."
        )


async def test_a_refusal_reaches_the_author_with_its_reason(tmp_path: Path) -> None:
    async with Forum(_settings(tmp_path)) as forum:
        draft = await _fill_form(forum)
        await forum.say(f":clic {_button(draft, 'proposal:1:draft:submit')}", as_name="Marie")
        # A resident cannot press the moderators' buttons, even with a forged id.
        await forum.say(f"{MODERATION} :clic proposal:1:review:refuse", as_name="Paul")
        asked = await forum.say(f"{MODERATION} :clic proposal:1:review:refuse", as_name="Modo")
        assert "question 1/1" in asked[-1].text
        assert (await forum.answer("non", as_name="Modo")).startswith("Trop court")
        await forum.say("Ce projet relève du bailleur social, pas de la commune.", as_name="Modo")
        dms = [p.text for p in forum.console.state.posted if p.chat == "dm:marie"]
        assert dms == [
            "Votre proposition n°1 « Des bacs à compost au square » n'a pas été publiée. "
            "Motif de la modération : Ce projet relève du bailleur social, pas de la commune."
        ]
        answers = [line for line in forum.lines if "(pour vous)" in line]
        assert any("Seule la modération peut publier ou refuser" in line for line in answers)
        # Refused: no longer published, answered or supported.
        # Refused before publication, it is no proposal residents or the council know of.
        assert await forum.answer(f"{MODERATION} /repondre 1 etude", as_name="Mairie") == (
            "Il n'y a pas de proposition n°1."
        )
        assert await forum.answer("/proposition 1", as_name="Paul") == (
            "Il n'y a pas de proposition n°1."
        )
        async with forum.db.read() as session:
            proposal = await session.get(Proposal, 1)
        assert proposal is not None and proposal.status == "refused"
        assert not [p for p in forum.console.state.posted if p.chat == PROPOSALS]


async def test_council_commands_explain_their_usage_in_french(tmp_path: Path) -> None:
    async with Forum(_settings(tmp_path)) as forum:
        assert (await forum.answer("/repondre", as_name="Mairie")).startswith(
            "Utilisation : /repondre <numéro> etude|acceptee|refusee"
        )
        assert (await forum.answer("/repondre 4 peut-etre", as_name="Mairie")).startswith(
            "Utilisation : /repondre"
        )
        assert await forum.answer("/repondre 4 etude", as_name="Mairie") == (
            "Il n'y a pas de proposition n°4."
        )
        assert await forum.answer("/repondre 4 etude", as_name="Paul") == (
            "Seuls les services de la mairie peuvent utiliser /repondre."
        )
        assert await forum.answer("/avancement 4", as_name="Mairie") == (
            "Utilisation : /avancement <numéro> en_cours|realisee [note]"
        )
        assert await forum.answer("/retirer", as_name="Paul") == "Utilisation : /retirer <numéro>"
        assert (await forum.answer("/nouvelles 3", as_name="Paul")).startswith(
            "Utilisation : /nouvelles"
        )
