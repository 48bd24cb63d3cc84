<?xml version="1.0" encoding="UTF-8"?>
<!--
  CDA R2 -> HTML fragment for the dui-gateway console (written for the gateway; an equivalent of
  the ANS/HL7 style sheet, reduced to what an operator needs to read the document).
  Only text is copied: no attribute, link, style or script of the document reaches the page.
  Licence: Apache-2.0, as the rest of dui-gateway.
-->
<xsl:stylesheet version="1.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:cda="urn:hl7-org:v3"
    exclude-result-prefixes="cda">
  <xsl:output method="html" encoding="UTF-8" omit-xml-declaration="yes"/>

  <xsl:template match="/">
    <div class="cda">
      <xsl:apply-templates select="cda:ClinicalDocument"/>
    </div>
  </xsl:template>

  <xsl:template match="cda:ClinicalDocument">
    <h3 class="cda-title"><xsl:value-of select="cda:title"/></h3>
    <dl class="cda-header">
      <dt>Date du document</dt>
      <dd><xsl:call-template name="date"><xsl:with-param name="v" select="cda:effectiveTime/@value"/></xsl:call-template></dd>
      <dt>Type</dt>
      <dd><xsl:value-of select="cda:code/@displayName"/> (<xsl:value-of select="cda:code/@code"/>)</dd>
      <dt>Personne</dt>
      <dd>
        <xsl:for-each select="cda:recordTarget/cda:patientRole/cda:patient/cda:name[1]">
          <xsl:value-of select="cda:given[1]"/><xsl:text> </xsl:text><xsl:value-of select="cda:family[1]"/>
        </xsl:for-each>
        <xsl:if test="cda:recordTarget/cda:patientRole/cda:patient/cda:birthTime/@value">
          <xsl:text>, né(e) le </xsl:text>
          <xsl:call-template name="date"><xsl:with-param name="v" select="cda:recordTarget/cda:patientRole/cda:patient/cda:birthTime/@value"/></xsl:call-template>
        </xsl:if>
      </dd>
      <xsl:if test="cda:author/cda:assignedAuthor">
        <dt>Auteur</dt>
        <dd>
          <xsl:for-each select="cda:author[1]/cda:assignedAuthor">
            <xsl:value-of select="cda:assignedPerson/cda:name/cda:given"/><xsl:text> </xsl:text>
            <xsl:value-of select="cda:assignedPerson/cda:name/cda:family"/>
            <xsl:if test="cda:representedOrganization/cda:name">
              <xsl:text> — </xsl:text><xsl:value-of select="cda:representedOrganization/cda:name"/>
            </xsl:if>
          </xsl:for-each>
        </dd>
      </xsl:if>
      <xsl:if test="cda:custodian//cda:representedCustodianOrganization/cda:name">
        <dt>Établissement</dt>
        <dd><xsl:value-of select="cda:custodian/cda:assignedCustodian/cda:representedCustodianOrganization/cda:name"/></dd>
      </xsl:if>
      <xsl:if test="cda:versionNumber/@value">
        <dt>Version</dt>
        <dd><xsl:value-of select="cda:versionNumber/@value"/></dd>
      </xsl:if>
    </dl>
    <xsl:apply-templates select="cda:component/cda:structuredBody/cda:component/cda:section"/>
    <xsl:if test="cda:component/cda:nonXMLBody">
      <p>Document non structuré (<xsl:value-of select="cda:component/cda:nonXMLBody/cda:text/@mediaType"/>) : contenu non affiché.</p>
    </xsl:if>
  </xsl:template>

  <xsl:template match="cda:section">
    <section class="cda-section">
      <h4><xsl:value-of select="cda:title"/></h4>
      <xsl:apply-templates select="cda:text"/>
      <xsl:apply-templates select="cda:component/cda:section"/>
    </section>
  </xsl:template>

  <xsl:template match="cda:text"><div class="cda-text"><xsl:apply-templates/></div></xsl:template>
  <xsl:template match="cda:paragraph"><p><xsl:apply-templates/></p></xsl:template>
  <xsl:template match="cda:list[@listType='ordered']"><ol><xsl:apply-templates select="cda:item"/></ol></xsl:template>
  <xsl:template match="cda:list"><ul><xsl:apply-templates select="cda:item"/></ul></xsl:template>
  <xsl:template match="cda:item"><li><xsl:apply-templates/></li></xsl:template>
  <xsl:template match="cda:table"><table class="cda-table"><xsl:apply-templates select="cda:caption|cda:thead|cda:tbody|cda:tr"/></table></xsl:template>
  <xsl:template match="cda:caption"><caption><xsl:apply-templates/></caption></xsl:template>
  <xsl:template match="cda:thead"><thead><xsl:apply-templates select="cda:tr"/></thead></xsl:template>
  <xsl:template match="cda:tbody"><tbody><xsl:apply-templates select="cda:tr"/></tbody></xsl:template>
  <xsl:template match="cda:tr"><tr><xsl:apply-templates select="cda:th|cda:td"/></tr></xsl:template>
  <xsl:template match="cda:th"><th scope="col"><xsl:apply-templates/></th></xsl:template>
  <xsl:template match="cda:td"><td><xsl:apply-templates/></td></xsl:template>
  <xsl:template match="cda:br"><br/></xsl:template>
  <xsl:template match="cda:content|cda:sub|cda:sup|cda:footnote|cda:linkHtml"><span><xsl:apply-templates/></span></xsl:template>
  <xsl:template match="cda:renderMultiMedia"/>
  <xsl:template match="text()"><xsl:value-of select="."/></xsl:template>
  <xsl:template match="*"><xsl:apply-templates/></xsl:template>

  <xsl:template name="date">
    <xsl:param name="v"/>
    <xsl:choose>
      <xsl:when test="string-length($v) &gt;= 8">
        <xsl:value-of select="substring($v, 7, 2)"/>/<xsl:value-of select="substring($v, 5, 2)"/>/<xsl:value-of select="substring($v, 1, 4)"/>
        <xsl:if test="string-length($v) &gt;= 12">
          <xsl:text> </xsl:text><xsl:value-of select="substring($v, 9, 2)"/>:<xsl:value-of select="substring($v, 11, 2)"/>
        </xsl:if>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$v"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
