using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;

namespace SensMerging.Host.Serving.Web;

/// <summary>
/// Builds an HTML page. Every piece of text goes through <see cref="Text"/> or <see cref="Attr"/> (HTML-encoded: names,
/// tags, config text, error messages are user-controlled); only the page's own markup and the sanitised model card go
/// through <see cref="Raw"/>.
/// </summary>
internal sealed class HtmlWriter
{
    private readonly StringBuilder _sb = new(16 * 1024);

    /// <summary>Markup written as is: only literals of the page and sanitiser output.</summary>
    public HtmlWriter Raw(string markup)
    {
        _sb.Append(markup);
        return this;
    }

    /// <summary>Text content, encoded.</summary>
    public HtmlWriter Text(string? text)
    {
        if (!string.IsNullOrEmpty(text))
        {
            _sb.Append(HtmlEncoder.Default.Encode(text));
        }
        return this;
    }

    /// <summary>An attribute <c> name="value"</c>, the value encoded.</summary>
    public HtmlWriter Attr(string name, string? value)
    {
        _sb.Append(' ').Append(name).Append("=\"").Append(HtmlEncoder.Default.Encode(value ?? string.Empty)).Append('"');
        return this;
    }

    /// <summary><c>&lt;tag attrs&gt;text&lt;/tag&gt;</c> with the text encoded.</summary>
    public HtmlWriter Element(string tag, string? text, string? cssClass = null)
    {
        _sb.Append('<').Append(tag);
        if (cssClass is not null)
        {
            Attr("class", cssClass);
        }
        _sb.Append('>');
        Text(text);
        _sb.Append("</").Append(tag).Append('>');
        return this;
    }

    /// <summary>A link; <paramref name="href"/> must be built by the page (site-relative or encoded by <see cref="Url"/>).</summary>
    public HtmlWriter Link(string href, string? text, string? cssClass = null)
    {
        _sb.Append("<a");
        Attr("href", href);
        if (cssClass is not null)
        {
            Attr("class", cssClass);
        }
        _sb.Append('>');
        Text(text);
        _sb.Append("</a>");
        return this;
    }

    /// <summary>Text in a table cell.</summary>
    public HtmlWriter Cell(string? text, string tag = "td") => Element(tag, text);

    public override string ToString() => _sb.ToString();

    /// <summary>A URL path segment (or query value), percent-encoded.</summary>
    public static string Url(string value) => Uri.EscapeDataString(value);

    /// <summary>A repository file path with each segment percent-encoded and the slashes kept.</summary>
    public static string UrlPath(string path) => string.Join('/', path.Split('/').Select(Uri.EscapeDataString));

    /// <summary>A number for tables: four decimals, or NaN/Infinity spelled out.</summary>
    public static string Number(double value) =>
        double.IsFinite(value) ? value.ToString("0.0000", CultureInfo.InvariantCulture) : value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A UTC time as <c>yyyy-MM-dd HH:mm:ss'Z'</c>.</summary>
    public static string Time(DateTime time) => time.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>A byte count with a binary unit.</summary>
    public static string Bytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        var unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return unit == 0 ? bytes.ToString(CultureInfo.InvariantCulture) + " B" : value.ToString("0.0", CultureInfo.InvariantCulture) + " " + units[unit];
    }
}
