import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    """ApiToken moves here from the api app: its table stays (``api_apitoken``), only Django's
    state changes. AuditEntry is new."""

    initial = True

    dependencies = [("api", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiToken",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(max_length=100, unique=True)),
                        (
                            "role",
                            models.CharField(
                                choices=[
                                    ("admin", "admin"),
                                    ("operator", "operator"),
                                    ("viewer", "viewer"),
                                    ("node", "node (registration only)"),
                                ],
                                default="operator",
                                max_length=8,
                            ),
                        ),
                        ("key_hash", models.CharField(editable=False, max_length=64, unique=True)),
                        ("prefix", models.CharField(editable=False, max_length=12)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_used", models.DateTimeField(blank=True, null=True)),
                        ("revoked", models.BooleanField(default=False)),
                    ],
                    options={"ordering": ["name"], "db_table": "api_apitoken"},
                ),
            ],
            database_operations=[],
        ),
        migrations.CreateModel(
            name="AuditEntry",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now)),
                ("actor_kind", models.CharField(max_length=10)),
                ("actor", models.CharField(blank=True, max_length=150)),
                ("action", models.CharField(max_length=40)),
                ("target", models.CharField(blank=True, max_length=200)),
                ("detail", models.JSONField(blank=True, default=dict)),
                ("ip", models.GenericIPAddressField(blank=True, null=True)),
            ],
            options={
                "verbose_name_plural": "audit entries",
                "ordering": ["-at", "-pk"],
                "indexes": [
                    models.Index(fields=["-at", "-id"], name="audit_newest"),
                    models.Index(fields=["action", "-at"], name="audit_by_action"),
                ],
            },
        ),
    ]
