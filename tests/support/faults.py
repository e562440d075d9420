"""What can go wrong between Offboard and a CRM, named once for every fake.

The HubSpot fake, the Salesforce fake and the fault suite take these names. The first four
are the sandbox CRM's own kinds (``offboard sandbox fail KIND``) and mean the same there;
the rest only a CRM reached over the network can do. Each fake says which it can play
(``FakeHubSpot.FAULTS``, ``FakeSalesforce.FAULTS``) and refuses the others.

=================  ====================================================  ===========
fault              what the client sees                                  work done
=================  ====================================================  ===========
transient          a 5xx answer (HubSpot 503, Salesforce 503)            none
rate_limited       over the API budget (HubSpot 429, Salesforce 403      none
                   REQUEST_LIMIT_EXCEEDED)
permanent          a 4xx refusal that repeating will not change          none
lost_reply         the connection drops before the answer                all of it
reset              the connection resets before the CRM does anything    none
timeout            the call hangs, then the CRM's edge answers 504       none
session_expired    an answer; then every session ends (Salesforce)       all of it
=================  ====================================================  ===========
"""

from __future__ import annotations

from enum import StrEnum


class Fault(StrEnum):
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    PERMANENT = "permanent"
    LOST_REPLY = "lost_reply"
    RESET = "reset"
    TIMEOUT = "timeout"
    SESSION_EXPIRED = "session_expired"


# The kinds ``offboard sandbox fail`` takes, under the same names.
SANDBOX = (Fault.TRANSIENT, Fault.RATE_LIMITED, Fault.PERMANENT, Fault.LOST_REPLY)
