"""The wait on a DexCare report: what the sensor (on the worker), the trigger (in the triggerer) and a blocking
caller (``DexCareHook.get_df``, through :mod:`dexcare.frames`) share, so the three cannot drift apart.

:mod:`~dexcare.wait.settings` checks the wait's settings, :mod:`~dexcare.wait.tracking` decides what a status
means, :mod:`~dexcare.wait.state` keeps the sensor's wait across reschedules, deferrals and tries,
:mod:`~dexcare.wait.messages` words what the wait says, and :mod:`~dexcare.wait.blocking` is the wait for a
caller that simply blocks. The hooks below never import this package; it reaches the hook only through the
hook object its callers pass in.
"""
