"""Campaigns (mass communications): a campaign is data (YAML), a run snapshots its audience in the warehouse
and sends it in chunks at its rate limit, through the contact policy, as message intents on the bus.

    model.py    the campaign file (JSON Schema through the shared data-file loader)
    checks.py   references checked against what is installed (segments, channels, templates)
    runner.py   launch, send (resumable, exactly once per profile), pause/resume/cancel, status
    cli.py      ``cdp-hub campaigns validate|list|preview|launch|pause|resume|cancel|status``

docs/campaigns.md is the user's guide.
"""
