"""Slowing password guessing."""

from schoolproxy.identity.signin_guard import MAX_DELAY, SigninGuard


def test_distinct_wrong_credentials_slow_an_address_and_report_it_once():
    g = SigninGuard(max_failures=3, window_seconds=60)
    reports = [g.failed("10.0.0.9", bytes([i]), now=i) for i in range(5)]
    assert reports == [False, False, True, False, False]
    assert g.delay("10.0.0.9", now=5) > 0
    assert g.delay("10.0.0.8", now=5) == 0             # other clients unaffected


def test_the_same_saved_wrong_password_repeated_is_not_guessing():
    g = SigninGuard(max_failures=3, window_seconds=60)
    assert not any(g.failed("10.0.0.9", b"same", now=i) for i in range(50))
    assert g.delay("10.0.0.9", now=50) == 0


def test_delay_grows_is_capped_and_ends_with_the_window():
    g = SigninGuard(max_failures=2, window_seconds=100)
    delays = []
    for i in range(10):
        g.failed("10.0.0.9", bytes([i]), now=i)
        delays.append(g.delay("10.0.0.9", now=i))
    assert delays[0] == 0 and delays[1:4] == [2, 4, 8] and max(delays) == MAX_DELAY
    assert g.delay("10.0.0.9", now=200) == 0


def test_memory_is_bounded_under_a_flood_of_addresses():
    g = SigninGuard(max_failures=2, window_seconds=100)
    for i in range(30_000):
        g.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", b"k", now=0)
    assert len(g._clients) <= 10_000


async def test_turns_one_at_a_time_per_key_in_arrival_order():
    import asyncio

    from schoolproxy.identity.signin_guard import Turns
    turns, order, inside = Turns(), [], set()

    async def attempt(i, ip, user):
        async with turns.turn(ip, "account:" + user):
            assert not inside & {ip, user}  # nobody else holds this address or account
            inside.update({ip, user})
            await asyncio.sleep(0.01)
            order.append(i)
            inside.difference_update({ip, user})

    await asyncio.gather(*(attempt(i, "10.0.0.9", f"u{i}") for i in range(4)),
                         *(attempt(10 + i, f"10.0.1.{i}", "jsmith") for i in range(4)))
    assert [i for i in order if i < 10] == [0, 1, 2, 3] and [i for i in order if i >= 10] == [10, 11, 12, 13]
    assert turns._locks == {} and turns._queued == {}  # nothing kept once nobody waits


async def test_turns_say_when_too_many_are_waiting():
    import asyncio

    from schoolproxy.identity.signin_guard import Turns
    turns = Turns(max_waiting=2)
    release = asyncio.Event()

    async def hold():
        async with turns.turn("10.0.0.9"):
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    await asyncio.sleep(0)
    assert turns.full("10.0.0.9") and not turns.full("10.0.0.8")
    release.set()
    await asyncio.gather(*tasks)
    assert not turns.full("10.0.0.9")
