from django.db import migrations


class Migration(migrations.Migration):
    """ApiToken now belongs to the accounts app; its table is kept as it is."""

    dependencies = [("api", "0001_initial"), ("accounts", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiToken")],
            database_operations=[],
        ),
    ]
