# Outbox rows that Redis can never take are set aside, with the reason, instead of
# blocking the rows behind them.

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("diffs", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="outboxentry",
            name="refused",
            field=models.TextField(blank=True, null=True),
        ),
    ]
