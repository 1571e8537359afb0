"""Multi user, distributed: slot k numbers k, k+N, k+2N … offline; N changes safely."""

from __future__ import annotations

from engine.numbering import epoch_owner
from projections.rebuild import rebuild
from projections.store import ViewStore
from tests.support.devices import Agents


async def test_three_users_offline_then_a_fourth_joins(small_runway: Agents) -> None:
    agents = small_runway
    # The seed's setup: the users first, then distributed mode (before any document).
    ann, ben, cat = [await agents.new(u) for u in ("ann", "ben", "cat")]
    admin = await agents._admin()
    await admin.set_mode("distributed")
    for d in (ann, ben, cat):
        await d.sync()  # learn the mode, the slots and the epochs …
        assert d.mode == "distributed"
        await d.disconnect()  # … then work offline
    assert [d.slot for d in (ann, ben, cat)] == [1, 2, 3]

    got: dict[str, list[int]] = {"ann": [], "ben": [], "cat": []}
    for _ in range(3):
        for d in (ann, ben, cat):
            got[d.user].append((await d.create("invoice", f"for {d.user}")).number)
    assert got == {"ann": [1, 4, 7], "ben": [2, 5, 8], "cat": [3, 6, 9]}
    # quotes and estimates have their own series, same rule
    assert (await ben.create("quote", "q")).number == 2

    # Epoch 1 ends at 12 (runway 4 per user): ann gets 10, then nothing left offline.
    assert (await ann.create("invoice", "x")).number == 10
    zero = await ann.create("invoice", "y")
    assert zero.number == 0
    assert await ann.assign_numbers() == {}  # still no epoch to number from

    # Dan joins while ann, ben and cat are still offline: N becomes 4 after 12.
    dan = await agents.new("dan")
    assert dan.slot == 4
    dan_numbers = [(await dan.create("invoice", "for dan")).number for _ in range(3)]
    assert dan_numbers == [16, 20, 24]
    # ben (old epoch, still offline) carries on in epoch 1: no collision possible
    assert (await ben.create("invoice", "z")).number == 11

    everyone = [ann, ben, cat, dan]
    for d in everyone:
        await d.connect()
        await d.sync()
    for d in everyone:
        await d.sync()
    # ann learns epoch 2 and numbers her 0 document from her new progression
    assigned = await ann.assign_numbers()
    assert assigned == {zero.doc_id: 13}
    assert (await cat.create("invoice", "w")).number == 12
    assert (await cat.create("invoice", "w")).number == 15
    for d in everyone:
        await d.sync()
    for d in everyone:
        await d.sync()
        invoices = d.documents("invoice")
        numbers = [v.number for v in invoices]
        assert len(numbers) == len(set(numbers)), numbers
        assert d.duplicates() == []
        # each number lies in its author's progression
        eps = d.numbering.epochs["invoice"]
        for v in invoices:
            owner = epoch_owner(eps, v.number)
            assert owner is not None and owner[1] == v.user, (v.number, v.user)


async def test_hand_typed_number_in_own_progression_is_never_reused(
    small_runway: Agents,
) -> None:
    agents = small_runway
    ann = await agents.new("ann")
    ben = await agents.new("ben")
    admin = await agents._admin()
    await admin.set_mode("distributed")
    await ann.sync()
    await ben.sync()
    # epoch 1: ann 1,3,5,7; ben 2,4,6,8
    await ben.create("invoice", "typed by hand into ann's series", number=5)
    await ben.sync()
    await ann.sync()
    # ann goes on after the highest number of her series in use (5), never reusing it;
    # 1 and 3 stay unused (a gap the projections report per slot).
    assert (await ann.create("invoice", "a")).number == 7
    # the engine extended the epoch when 5 was used (runway ahead of use): 9 comes next
    assert (await ann.create("invoice", "b")).number == 9
    assert ann.duplicates() == []


async def test_back_to_distributed_after_a_forced_switch_opens_a_new_epoch(
    small_runway: Agents,
) -> None:
    agents = small_runway
    alice, bob = await agents.new("alice"), await agents.new("bob")
    admin = await agents._admin()
    await admin.set_mode("distributed")
    for d in (alice, bob, alice, bob):
        await d.sync()
    assert [(await alice.create("invoice", "a")).number for _ in range(2)] == [1, 3]
    assert (await bob.create("invoice", "b")).number == 2
    for d in (alice, bob):
        await d.sync()
    await admin.set_mode("centralized", force=True)
    await alice.sync()
    assert [(await alice.create("invoice", "c")).number for _ in range(2)] == [4, 5]
    await admin.set_mode("distributed", force=True)
    for d in (alice, bob, alice, bob):
        await d.sync()
    # Epoch 1 was closed at 3 when the mode left distributed (4 and 5 went to
    # centralized numbering in its range): numbering goes on in a new epoch after
    # it (offline devices that missed the switches may still use epoch 1 to its end).
    a = [(await alice.create("invoice", "a")).number for _ in range(2)]
    b = (await bob.create("invoice", "b")).number
    for d in (alice, bob):
        await d.sync()
    epochs = (await admin.status()).epochs["invoice"]
    assert [e.epoch for e in epochs] == [1, 2]
    start = epochs[1].start  # after epoch 1's end (extended or not by now)
    assert start == epochs[0].end + 1 > 5
    assert a == [start, start + 2] and b == start + 1
    # The views agree: no gap (bob's next is his runway; the rest of epoch 1's range
    # lies above every shared number).
    views = agents.tmp_path / "views-check.sqlite"
    rebuild(agents.tmp_path / "data" / "log.sqlite", views)
    store = ViewStore.open_readonly(views)
    try:
        assert store.gaps("invoice") == []
        assert store.duplicates() == []
    finally:
        store.close()
