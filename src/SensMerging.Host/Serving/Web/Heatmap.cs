using System.Globalization;

namespace SensMerging.Host.Serving.Web;

/// <summary>
/// A heatmap as inline SVG, rendered on the server: one row per expert, one column per layer group, each cell coloured
/// by its value and carrying the exact value in a <c>&lt;title&gt;</c> (shown on hover, read by screen readers).
/// </summary>
internal static class Heatmap
{
    private const int Cell = 22;
    private const int LabelWidth = 150;
    private const int HeaderHeight = 110;

    /// <summary>Writes the SVG. <paramref name="diverging"/> colours around 0 (differences); otherwise from the minimum to the maximum.</summary>
    public static void Write(HtmlWriter html, string id, string caption, IReadOnlyList<string> rows, IReadOnlyList<string> columns,
        Func<int, int, double?> value, bool diverging = false)
    {
        var values = new List<double>();
        for (var r = 0; r < rows.Count; r++)
        {
            for (var c = 0; c < columns.Count; c++)
            {
                if (value(r, c) is { } v && double.IsFinite(v))
                {
                    values.Add(v);
                }
            }
        }
        var min = values.Count > 0 ? values.Min() : 0;
        var max = values.Count > 0 ? values.Max() : 0;
        var bound = Math.Max(Math.Abs(min), Math.Abs(max));
        var width = LabelWidth + (columns.Count * Cell) + 10;
        var height = HeaderHeight + (rows.Count * Cell) + 30;
        html.Raw("<figure class=\"heatmap\"").Attr("id", id).Raw("><svg role=\"img\" xmlns=\"http://www.w3.org/2000/svg\"")
            .Attr("viewBox", $"0 0 {width} {height}").Attr("width", width.ToString(CultureInfo.InvariantCulture))
            .Attr("aria-label", caption).Raw(">");
        for (var c = 0; c < columns.Count; c++)
        {
            var x = LabelWidth + (c * Cell) + (Cell / 2);
            html.Raw("<text class=\"col\"").Attr("transform", $"translate({x},{HeaderHeight - 6}) rotate(-60)").Raw(">")
                .Text(Short(columns[c])).Raw("<title>").Text(columns[c]).Raw("</title></text>");
        }
        for (var r = 0; r < rows.Count; r++)
        {
            var y = HeaderHeight + (r * Cell);
            html.Raw("<text class=\"row\"").Attr("x", (LabelWidth - 6).ToString(CultureInfo.InvariantCulture))
                .Attr("y", (y + (Cell * 0.68)).ToString("0.#", CultureInfo.InvariantCulture)).Raw(">").Text(Short(rows[r])).Raw("<title>").Text(rows[r]).Raw("</title></text>");
            for (var c = 0; c < columns.Count; c++)
            {
                var v = value(r, c);
                var fill = v is { } d && double.IsFinite(d) ? Colour(d, min, max, bound, diverging) : "#dddddd";
                html.Raw("<rect class=\"cell\"").Attr("x", (LabelWidth + (c * Cell)).ToString(CultureInfo.InvariantCulture))
                    .Attr("y", y.ToString(CultureInfo.InvariantCulture)).Attr("width", (Cell - 1).ToString(CultureInfo.InvariantCulture))
                    .Attr("height", (Cell - 1).ToString(CultureInfo.InvariantCulture)).Attr("fill", fill)
                    .Attr("data-value", v?.ToString("R", CultureInfo.InvariantCulture) ?? string.Empty).Raw("><title>")
                    .Text($"{rows[r]} × {columns[c]}: {(v is { } t ? HtmlWriter.Number(t) : "none")}").Raw("</title></rect>");
            }
        }
        var legendY = HeaderHeight + (rows.Count * Cell) + 18;
        html.Raw("<text class=\"legend\"").Attr("x", LabelWidth.ToString(CultureInfo.InvariantCulture)).Attr("y", legendY.ToString(CultureInfo.InvariantCulture)).Raw(">")
            .Text(diverging
                ? $"blue < 0 < red; largest |difference| {HtmlWriter.Number(bound)}"
                : $"light {HtmlWriter.Number(min)} … dark {HtmlWriter.Number(max)}")
            .Raw("</text></svg><figcaption>").Text(caption).Raw("</figcaption></figure>");
    }

    private static string Short(string label) => label.Length <= 22 ? label : "…" + label[^21..];

    private static string Colour(double v, double min, double max, double bound, bool diverging)
    {
        if (diverging)
        {
            var t = bound > 0 ? Math.Clamp(v / bound, -1, 1) : 0;
            // White at 0, red for positive, blue for negative.
            return t >= 0 ? Rgb(255, Lerp(255, 60, t), Lerp(255, 50, t)) : Rgb(Lerp(255, 40, -t), Lerp(255, 90, -t), 255);
        }
        var s = max > min ? (v - min) / (max - min) : 0.5;
        // From pale yellow to dark blue.
        return Rgb(Lerp(255, 20, s), Lerp(247, 60, s), Lerp(200, 140, s));
    }

    private static int Lerp(int a, int b, double t) => (int)Math.Round(a + ((b - a) * t));

    private static string Rgb(int r, int g, int b) => $"#{r:x2}{g:x2}{b:x2}";
}
