"""Admin for provider operations: prices, shared rate limits, OpenAI-compatible connections.

Connection API keys are write-only here: the form has an empty password field ("leave
blank to keep") and the pages only ever say whether a key is stored.
"""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from .models import ModelPrice, ProviderConnection, ProviderLimit


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("provider", "model", "input_per_million_usd", "output_per_million_usd", "currency_note",
                    "updated_at")
    list_display_links = ("provider", "model")
    list_editable = ("input_per_million_usd", "output_per_million_usd", "currency_note")
    list_filter = ("provider",)
    search_fields = ("provider", "model")
    readonly_fields = ("updated_at",)


@admin.register(ProviderLimit)
class ProviderLimitAdmin(admin.ModelAdmin):
    list_display = ("provider", "max_concurrency", "requests_per_minute", "updated_at")
    list_editable = ("max_concurrency", "requests_per_minute")
    search_fields = ("provider",)
    readonly_fields = ("updated_at",)


class ProviderConnectionForm(forms.ModelForm):
    api_key = forms.CharField(
        label="API key (leave blank to keep)",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave blank to keep the stored key; servers such as "
                  "Ollama need none.",
    )
    remove_api_key = forms.BooleanField(
        label="Remove the stored API key", required=False,
        help_text="For a server that needs no key. Ignored when a new key is entered above.",
    )

    class Meta:
        model = ProviderConnection
        fields = ("name", "base_url", "is_active")

    def save(self, commit: bool = True) -> ProviderConnection:
        connection: ProviderConnection = super().save(commit=False)
        if self.cleaned_data.get("api_key"):
            connection.set_api_key(self.cleaned_data["api_key"])
        elif self.cleaned_data.get("remove_api_key"):
            connection.set_api_key("")
        if commit:
            connection.save()
        return connection


@admin.register(ProviderConnection)
class ProviderConnectionAdmin(admin.ModelAdmin):
    form = ProviderConnectionForm
    list_display = ("name", "base_url", "is_active", "key_stored", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name", "base_url")
    readonly_fields = ("key_stored", "created_at", "updated_at")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        key_fields = ("key_stored", "api_key", "remove_api_key") if obj else ("api_key",)
        fieldsets: list[Any] = [
            (None, {"fields": ("name", "base_url", "is_active")}),
            ("Credential", {"fields": key_fields}),
        ]
        if obj:
            fieldsets.append(("History", {"fields": ("created_at", "updated_at")}))
        return fieldsets

    @admin.display(boolean=True, description="API key stored")
    def key_stored(self, obj: ProviderConnection) -> bool:
        return obj.has_api_key
