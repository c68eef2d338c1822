<?xml version="1.0" encoding="utf-8"?>
<!-- yagi-meter: an Atom feed or entry as a readable page (browsers, and the
     server for clients that prefer text/html). -->
<xsl:stylesheet version="1.0"
                xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:atom="http://www.w3.org/2005/Atom"
                exclude-result-prefixes="atom">
  <xsl:output method="html" encoding="utf-8" indent="yes"/>

  <xsl:template match="/">
    <html lang="en">
      <head>
        <meta charset="utf-8"/>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <title><xsl:value-of select="(atom:feed|atom:entry)/atom:title"/></title>
        <style>
          body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
          header { background: #22304a; color: #fff; padding: 14px 24px; }
          header h1 { font-size: 20px; margin: 0 0 4px; }
          header p { margin: 0; opacity: .8; font-size: 13px; }
          nav { padding: 10px 24px; background: #fff; border-bottom: 1px solid #dde1e7; }
          nav a { margin-right: 16px; color: #1f5fbf; text-decoration: none; font-weight: 600; }
          main { padding: 12px 24px 32px; }
          table { border-collapse: collapse; width: 100%; background: #fff; }
          th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid #e4e7ec; vertical-align: top; }
          th { background: #eef1f5; font-size: 13px; text-transform: uppercase; letter-spacing: .03em; }
          td.type a { font-weight: 600; }
          td.when { white-space: nowrap; font: 13px/1.6 ui-monospace, monospace; }
          summary { cursor: pointer; color: #5b6475; font-size: 13px; }
          code, pre { font: 12px/1.4 ui-monospace, monospace; }
          details pre { white-space: pre-wrap; word-break: break-all; max-height: 24em; overflow: auto;
                        background: #f3f4f6; padding: 8px; margin: 6px 0 0; }
          .empty { padding: 24px; background: #fff; }
          .note { color: #5b6475; font-size: 13px; margin-top: 14px; }
        </style>
      </head>
      <body>
        <xsl:apply-templates select="atom:feed|atom:entry"/>
      </body>
    </html>
  </xsl:template>

  <xsl:template match="atom:feed">
    <header>
      <h1><xsl:value-of select="atom:title"/></h1>
      <p>Atom feed, updated <xsl:value-of select="translate(substring(atom:updated, 1, 19), 'T', ' ')"/> UTC · newest first ·
         <xsl:value-of select="count(atom:entry)"/> entries on this page</p>
    </header>
    <nav>
      <xsl:for-each select="atom:link[@rel='current']"><a href="{@href}">Newest</a></xsl:for-each>
      <xsl:for-each select="atom:link[@rel='previous']"><a href="{@href}">← Newer</a></xsl:for-each>
      <xsl:for-each select="atom:link[@rel='next']"><a href="{@href}">Older →</a></xsl:for-each>
      <xsl:for-each select="atom:link[@rel='last']"><a href="{@href}">Oldest</a></xsl:for-each>
    </nav>
    <main>
      <xsl:choose>
        <xsl:when test="atom:entry">
          <table>
            <thead>
              <tr><th>Published</th><th>Event type</th><th>Tenant</th><th>Resource</th><th>Service</th></tr>
            </thead>
            <tbody><xsl:apply-templates select="atom:entry" mode="row"/></tbody>
          </table>
        </xsl:when>
        <xsl:otherwise><p class="empty">No entries on this page.</p></xsl:otherwise>
      </xsl:choose>
      <p class="note">This is an Atom feed: subscribe to its address in a feed reader, or poll it
        and follow its <code>previous</code> link to read every new event once.</p>
    </main>
  </xsl:template>

  <xsl:template match="atom:entry" mode="row">
    <tr>
      <td class="when"><xsl:value-of select="translate(substring(atom:published, 1, 19), 'T', ' ')"/> UTC</td>
      <td class="type">
        <a href="{atom:link[@rel='self']/@href}"><xsl:value-of select="atom:title"/></a>
        <details><summary>notification</summary><pre><xsl:value-of select="atom:content"/></pre></details>
      </td>
      <td><xsl:value-of select="atom:category[@label='tenant']/@term"/></td>
      <td><xsl:value-of select="atom:category[@label='resource']/@term"/></td>
      <td><xsl:value-of select="atom:category[@label='service']/@term"/></td>
    </tr>
  </xsl:template>

  <xsl:template match="atom:entry">
    <header>
      <h1><xsl:value-of select="atom:title"/></h1>
      <p><xsl:value-of select="atom:summary"/> · <xsl:value-of select="atom:id"/></p>
    </header>
    <main>
      <table>
        <tr><th>Published</th><td><code><xsl:value-of select="atom:published"/></code></td></tr>
        <tr><th>Archived</th><td><code><xsl:value-of select="atom:updated"/></code></td></tr>
        <xsl:for-each select="atom:category">
          <tr><th><xsl:value-of select="@label"/></th><td><xsl:value-of select="@term"/></td></tr>
        </xsl:for-each>
      </table>
      <!-- Base64 in the Atom document (RFC 4287 4.1.3.3); feeds/browser.py decodes it
           for the HTML it serves, a browser running this stylesheet itself shows Base64. -->
      <h2>Notification</h2>
      <pre><xsl:value-of select="atom:content"/></pre>
    </main>
  </xsl:template>
</xsl:stylesheet>
