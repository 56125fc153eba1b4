"""How the kit launches Firefox: the preferences for real media, no prompts and no traffic.

Playwright drives Firefox ESR through WebDriver BiDi (``channel="moz-firefox"``) and
writes its own test profile (updates, safe browsing and first-run pages already off);
:data:`PREFS` adds, on top, everything a test run needs:

* media: a fake camera and microphone, no permission prompt, and ICE host candidates on
  every interface, by address (no mDNS names: they would need multicast);
* hygiene: every background service that would contact Mozilla or anyone else is off:
  remote settings, telemetry and crash reports, captive-portal and connectivity checks,
  safe-browsing lists, push, Normandy/Nimbus studies, add-on and system add-on updates,
  geolocation and region look-ups, DNS over HTTPS, DNS prefetch and speculative
  connections, proxy auto-detection, OCSP, CRLite and intermediate-certificate updates,
  search and suggest updates, new-tab content, the ML and translation engines.

Preferences alone are not enough: a release build ignores an override of the remote
settings server (``services.settings.server``) and kept looking up
firefox.settings.services.mozilla.com, until Firefox's own test switch
``MOZ_DISABLE_NONLOCAL_CONNECTIONS=1`` was set in its environment
(:data:`coview_server.testing.browsers.FIREFOX_ENV`), which makes it accept the dummy
server and refuse every connection that is not local.

``tests/e2e/test_firefox.py`` proves it: Firefox runs in a namespace whose only route out
leads to a namespace that records every packet, and not one may arrive there.
"""

from __future__ import annotations

from typing import Any

#: Where a service would go if some preference is missed: an invalid, never-resolved URL.
_NOWHERE = "data:,"

MEDIA_PREFS: dict[str, Any] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.getusermedia.screensharing.enabled": True,
    "media.peerconnection.enabled": True,
    "media.peerconnection.ice.default_address_only": False,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.no_host": False,
    "media.peerconnection.ice.proxy_only": False,
    "media.peerconnection.default_iceservers": "[]",
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    # No OpenH264/Widevine download: VP8/VP9 are built in.
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-manager.url": _NOWHERE,
    "media.gmp-gmpopenh264.autoupdate": False,
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-widevinecdm.enabled": False,
    "media.gmp-widevinecdm.autoupdate": False,
    "media.eme.enabled": False,
}

HYGIENE_PREFS: dict[str, Any] = {
    # Updates of Firefox itself, add-ons, system add-ons, search engines, user agents.
    "app.update.auto": False,
    "app.update.disabledForTesting": True,
    "app.update.checkInstallTime": False,
    "app.update.staging.enabled": False,
    "app.update.background.scheduling.enabled": False,
    "extensions.update.enabled": False,
    "extensions.update.autoUpdateDefault": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.systemAddon.update.url": _NOWHERE,
    "extensions.getAddons.cache.enabled": False,
    "extensions.getAddons.discovery.api_url": _NOWHERE,
    "extensions.htmlaboutaddons.recommendations.enabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.pocket.enabled": False,
    "extensions.webcompat-reporter.enabled": False,
    "browser.search.update": False,
    "browser.search.geoSpecificDefaults": False,
    "browser.search.suggest.enabled": False,
    "general.useragent.updates.enabled": False,
    # Remote settings (blocklists, CRLite, experiments, ML models…): a dummy server.
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "services.settings.poll_interval": 2147483,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "security.pki.crlite_mode": 0,
    "security.OCSP.enabled": 0,
    "security.OCSP.require": False,
    "security.certerrors.mitm.priming.enabled": False,
    "security.certerrors.mitm.auto_enable_enterprise_roots": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "nimbus.profilesdatastoreservice.enabled": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    # Telemetry, data reporting, crash reports, pings.
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": _NOWHERE,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.updatePing.enabled": False,
    "toolkit.telemetry.shutdownPingSender.enabled": False,
    "toolkit.telemetry.newProfilePing.enabled": False,
    "toolkit.telemetry.firstShutdownPing.enabled": False,
    "toolkit.telemetry.bhrPing.enabled": False,
    "toolkit.telemetry.coverage.opt-out": True,
    "toolkit.coverage.opt-out": True,
    "toolkit.coverage.endpoint.base": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.usage.uploadEnabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.crashReports.unsubmittedCheck.enabled": False,
    "browser.crashReports.unsubmittedCheck.autoSubmit2": False,
    "browser.tabs.crashReporting.sendReport": False,
    "breakpad.reportURL": "",
    # Captive portal and connectivity checks (detectportal.firefox.com).
    "network.captive-portal-service.enabled": False,
    "captivedetect.canonicalURL": "",
    "network.connectivity-service.enabled": False,
    "network.connectivity-service.DNSv4.domain": "",
    "network.connectivity-service.DNSv6.domain": "",
    "network.connectivity-service.IPv4.url": "",
    "network.connectivity-service.IPv6.url": "",
    # Safe browsing and tracking-protection lists.
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.passwords.enabled": False,
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.google.gethashURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.google4.gethashURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.safebrowsing.provider.mozilla.gethashURL": "",
    "privacy.trackingprotection.enabled": False,
    "privacy.trackingprotection.pbmode.enabled": False,
    "privacy.trackingprotection.socialtracking.enabled": False,
    "privacy.trackingprotection.cryptomining.enabled": False,
    "privacy.trackingprotection.fingerprinting.enabled": False,
    "privacy.query_stripping.enabled": False,
    "signon.management.page.breach-alerts.enabled": False,
    # Push, geolocation, region.
    "dom.push.enabled": False,
    "dom.push.connection.enabled": False,
    "dom.push.serverURL": "",
    "geo.enabled": False,
    "geo.provider.network.url": "",
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.search.geoip.url": "",
    # Name resolution and speculative traffic: no DoH, no prefetch, no IPv6 look-ups.
    "network.trr.mode": 5,
    "network.trr.uri": "",
    "doh-rollout.enabled": False,
    "doh-rollout.disable-heuristics": True,
    "network.dns.disablePrefetch": True,
    "network.dns.disablePrefetchFromHTTPS": True,
    "network.dns.disableIPv6": True,
    "network.dns.native_https_query": False,
    "network.dns.echconfig.enabled": False,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.predictor.enable-prefetch": False,
    "network.http.speculative-parallel-limit": 0,
    "network.http.http3.enable": False,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.places.speculativeConnect.enabled": False,
    "browser.fixup.alternate.enabled": False,
    "network.proxy.type": 0,
    "network.sntp.pools": "",
    "network.manage-offline-status": False,
    "network.notify.checkForProxies": False,
    "dom.security.https_only_mode": False,
    "dom.security.https_first": False,
    # Accounts, sync and the start pages' remote content.
    "identity.fxaccounts.enabled": False,
    "services.sync.engine.addons": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.newtabpage.activity-stream.showSponsored": False,
    "browser.newtabpage.activity-stream.showSponsoredTopSites": False,
    "browser.newtabpage.activity-stream.default.sites": "",
    "browser.topsites.contile.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "browser.discovery.enabled": False,
    "browser.urlbar.quicksuggest.enabled": False,
    "browser.urlbar.suggest.quicksuggest.sponsored": False,
    "browser.urlbar.suggest.quicksuggest.nonsponsored": False,
    "browser.urlbar.merino.endpointURL": "",
    "browser.vpn_promo.enabled": False,
    "browser.shopping.experience2023.enabled": False,
    "browser.tabs.firefox-view": False,
    "browser.ml.enable": False,
    "browser.ml.chat.enabled": False,
    "browser.translations.enable": False,
    "browser.translations.automaticallyPopup": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.shell.checkDefaultBrowser": False,
    "startup.homepage_welcome_url": "about:blank",
    "startup.homepage_welcome_url.additional": "",
    "datareporting.policy.firstRunURL": "",
}

PREFS: dict[str, Any] = {**HYGIENE_PREFS, **MEDIA_PREFS}
