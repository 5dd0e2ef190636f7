"""lib/ome.OmeClient against the OME simulator (in-process): a 401 in the middle of a sync makes the
client log in again, and the old session is deleted first, so retries never use up OME's
100-sessions-per-user limit."""

from __future__ import annotations

import pytest

from lib.config import OmeSettings
from lib.errors import AuthError
from lib.http import TLSConfig
from lib.ome import OmeClient, PagingStats

PAGE = 25


def _settings(sim) -> OmeSettings:
    return OmeSettings(
        host=sim.host,
        port=443,
        username=sim.username,
        password=sim.password,
        tls=TLSConfig(ca_bundle=sim.ca_file),
        page_size=PAGE,
        timeout=10,
        inventory_threads=2,
        batch_size=200,
    )


def _read_all(sim) -> tuple[int, PagingStats]:
    stats = PagingStats()
    with OmeClient(_settings(sim)) as client:
        seen = sum(len(page.devices) for page in client.iter_pages(stats=stats))
    return seen, stats


def test_401_mid_sync_deletes_the_old_session_before_logging_in_again(ome_sim):
    sim = ome_sim(200)
    # The third page answers 401 once while the session is still open on the appliance (a 401
    # does not always end an OME session): the old one must be deleted, not left to time out.
    sim.faults.fail_page(2 * PAGE, 401, times=1)
    seen, stats = _read_all(sim)
    assert seen == len(sim.fleet.servers()) and not stats.failures
    s = sim.stats()
    assert s["sessions_created"] == 2, "logged in again once"
    assert s["sessions_deleted"] == 2, "the old session and, at the end, the new one"
    assert s["open_sessions"] == 0


def test_repeated_401s_never_accumulate_sessions(ome_sim):
    sim = ome_sim(200, max_sessions=3)
    # Without the delete, five re-logins would need six sessions and hit CURS1209 at the fourth.
    for page in range(1, 6):
        sim.faults.fail_page(page * PAGE, 401, times=1)
    seen, stats = _read_all(sim)
    assert seen == len(sim.fleet.servers()) and not stats.failures
    s = sim.stats()
    assert s["sessions_created"] == 6 and s["sessions_refused"] == 0
    assert s["open_sessions"] == 0


def test_expired_session_delete_fails_quietly_and_the_sync_goes_on(ome_sim):
    sim = ome_sim(200)
    # The session really expired: the best-effort DELETE with its token gets 401, which is not fatal.
    sim.faults.expire_after_requests = 3
    seen, stats = _read_all(sim)
    assert seen == len(sim.fleet.servers()) and not stats.failures
    s = sim.stats()
    assert s["sessions_created"] == 2 and s["sessions_expired"] == 1
    assert s["sessions_deleted"] == 1  # only the second one; the first was already gone
    assert s["open_sessions"] == 0


def test_a_failed_re_login_gives_every_thread_a_typed_error_and_a_later_one_recovers(ome_sim):
    sim = ome_sim(10)
    client = OmeClient(_settings(sim))
    with client:
        auth = client.auth
        stale = auth.token
        right, sim.password = sim.password, "Changed-On-The-Appliance-1"
        with pytest.raises(AuthError):
            auth.relogin(stale)  # the thread that saw the 401 first
        assert auth.token is None and auth.session_id is None
        with pytest.raises(AuthError):
            auth.relogin(stale)  # another thread with the same stale token: typed, not an assert
        sim.password = right
        fresh = auth.relogin(stale)
        assert fresh and fresh != stale and auth.token == fresh
    assert auth.token is None and auth.session_id is None, "logout forgets the session"
    s = sim.stats()
    assert s["open_sessions"] == 0 and s["sessions_created"] == 2
