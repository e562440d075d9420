"""What the tests share: the CRM fakes, the server and browser drivers, the fault harness, events.

Test modules import from here, never from each other; ``conftest.py`` files hold only fixtures.
"""
