"""The scheduled reports: the daily digest (``digest``), the weekly card-health report
(``health``) and when each goes out (``schedule``)."""
