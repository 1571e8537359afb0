"""The seed's distributed stories in the natural setup order: the mode (with the
team size), then each salesperson's laptop one after the other, each syncing as
it is set up. Real engine, broker and device agents."""

from __future__ import annotations

from devices.agent import DeviceAgent
from engine.numbering import epoch_owner
from tests.support.devices import Agents


async def _three_each(devices: list[DeviceAgent]) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {d.user: [] for d in devices}
    for _ in range(3):
        for d in devices:
            got[d.user].append((await d.create("invoice", f"for {d.user}")).number)
    return got


async def test_team_of_two_in_natural_order(agents: Agents) -> None:
    admin = await agents._admin()
    await admin.set_mode("distributed", team=2)
    ann = await agents.new("ann")  # set up, syncs
    ben = await agents.new("ben")  # set up later, syncs
    for d in (ann, ben):
        await d.disconnect()
    assert await _three_each([ann, ben]) == {"ann": [1, 3, 5], "ben": [2, 4, 6]}


async def test_team_of_three_in_natural_order_and_a_fourth_joins_later(
    small_runway: Agents,
) -> None:
    agents = small_runway  # runway 4: epoch 1 is 1..12
    admin = await agents._admin()
    await admin.set_mode("distributed")
    await admin.set_numbering(team=3)  # stated once, before or after the mode
    devices = []
    for user in ("ann", "ben", "cat"):
        d = await agents.new(user)
        devices.append(d)
    for d in devices:
        await d.disconnect()
    got = await _three_each(devices)
    assert got == {"ann": [1, 4, 7], "ben": [2, 5, 8], "cat": [3, 6, 9]}
    assert devices[0].series("invoice")["next"][:2] == [10, 0]  # 10, then out of runway

    # Dan joins while the others are offline: beyond the team size, so a new epoch
    # opens just above the open one's end (12): slot 4 of 4 numbers 16, 20, 24.
    dan = await agents.new("dan")
    assert [(await dan.create("invoice", "d")).number for _ in range(3)] == [16, 20, 24]
    series = dan.series("invoice")
    assert (series["slot"], series["step"]) == (4, 4)
    # The others carry on in epoch 1 offline: nobody collides.
    assert (await devices[1].create("invoice", "b")).number == 11
    everyone = [*devices, dan]
    for d in everyone:
        await d.connect()
        await d.sync()
    for d in everyone:
        await d.sync()
        invoices = d.documents("invoice")
        numbers = [v.number for v in invoices]
        assert len(numbers) == len(set(numbers)), numbers
        eps = d.numbering.epochs["invoice"]
        for v in invoices:
            owner = epoch_owner(eps, v.number)
            assert owner is not None and owner[1] == v.user


async def test_a_user_within_the_team_size_joins_the_open_epoch(small_runway: Agents) -> None:
    agents = small_runway
    admin = await agents._admin()
    await admin.set_mode("distributed", team=3)
    ann = await agents.new("ann")
    ben = await agents.new("ben")
    for _ in range(4):
        await ann.create("invoice", "a")
        await ben.create("invoice", "b")
    await ann.sync()
    await ben.sync()
    # cat comes later, while the others are at 10 and 11: slot 3 is still free in
    # the open epoch, so cat numbers 3, 6, 9 (their own series), with no new epoch.
    cat = await agents.new("cat")
    assert [(await cat.create("invoice", "c")).number for _ in range(3)] == [3, 6, 9]
    st = await admin.status()
    assert st.team == 3
    assert [e.epoch for e in st.epochs["invoice"]] == [1]


async def test_changing_the_team_size_opens_a_new_epoch_above_the_runway(
    small_runway: Agents,
) -> None:
    agents = small_runway
    admin = await agents._admin()
    await admin.set_mode("distributed", team=2)
    ann = await agents.new("ann")
    ben = await agents.new("ben")
    assert [(await ann.create("invoice", "a")).number for _ in range(2)] == [1, 3]
    await ann.sync()
    # The team grows to 3: the new progression starts above epoch 1's end (8),
    # the last number an offline device may already hold.
    await admin.set_numbering(team=3)
    await ann.sync()
    await ben.sync()
    await ann.sync()
    eps = ann.numbering.epochs["invoice"]
    assert [(e.start, e.increment) for e in eps] == [(1, 2), (9, 3)]
    # ben (offline meanwhile) may still have used 2..8: epoch 1 goes on for both.
    assert (await ben.create("invoice", "b")).number == 2
    assert (await ann.create("invoice", "a")).number == 5
