using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;
using SensMerging.Host.Serving.Web;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Serving.Web;

/// <summary>The pieces of the web pages that need no browser: card sanitising, encoding, query parsing, heatmap, assets.</summary>
public sealed class WebRenderingTests
{
    [Fact]
    public void A_model_card_keeps_markdown_and_loses_raw_HTML_scripts_handlers_and_javascript_links()
    {
        var html = ModelCardRenderer.Render(HubSiteFixture.HostileCard + "\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<div style=\"position:fixed\">x</div>\n");

        Assert.Contains("<h1", html, StringComparison.Ordinal);
        Assert.Contains("<table>", html, StringComparison.Ordinal);
        Assert.Contains("href=\"https://example.org/ok\"", html, StringComparison.Ordinal);
        Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<img", html, StringComparison.OrdinalIgnoreCase);
        // No element carries a javascript: URL (the raw <a href="javascript:..."> is text, its angle brackets encoded).
        Assert.DoesNotMatch("<a[^>]*javascript", html);
        Assert.DoesNotMatch("<[a-z][^>]*style=", html);
        // The raw HTML is still there to read, as text.
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html, StringComparison.Ordinal);
    }

    [Fact]
    public void Text_and_attributes_are_encoded()
    {
        var html = new HtmlWriter().Text("<script>alert(1)</script>").Attr("title", "\" onmouseover=\"x").Link("/merges/a", "<b>").ToString();
        Assert.DoesNotContain("<script>", html, StringComparison.Ordinal);
        Assert.DoesNotContain("\" onmouseover", html, StringComparison.Ordinal);
        Assert.DoesNotContain("<b>", html, StringComparison.Ordinal);
        Assert.Equal("a%2Fb%20c", HtmlWriter.Url("a/b c"));
        Assert.Equal("dir/a%20b.safetensors", HtmlWriter.UrlPath("dir/a b.safetensors"));
    }

    [Fact]
    public void The_query_string_maps_to_the_CLI_filters_and_refuses_bad_values()
    {
        var request = ListRequest.Parse(Query(("q", "poetry"), ("strategy", "ties"), ("decorator", "sens"), ("status", "Failed"),
            ("since", "2026-01-02"), ("until", "2026-02-01T10:00:00Z"), ("sort", "score"), ("score", "math/exact_match"), ("offset", "100"), ("limit", "20")));
        var q = request.Query;
        Assert.Equal(("poetry", "ties", "sens", MergeStatus.Failed, MergeSort.Score, "math/exact_match", 100, 20),
            (q.Search, q.Strategy, q.Decorator, q.Status, q.Sort, q.ScoreKey, q.Offset, q.Limit));
        Assert.Equal(new DateTime(2026, 1, 2, 0, 0, 0, DateTimeKind.Utc), q.Since);
        Assert.Equal(new DateTime(2026, 2, 1, 10, 0, 0, DateTimeKind.Utc), q.Until);
        Assert.Equal(DateTimeKind.Utc, q.Since!.Value.Kind);
        Assert.Contains("offset=120", request.With(("offset", "120")), StringComparison.Ordinal);
        Assert.DoesNotContain("offset", request.With(("offset", null)), StringComparison.Ordinal);

        var defaults = ListRequest.Parse(Query()).Query;
        Assert.Equal((MergeSort.Newest, 0, ListRequest.DefaultLimit, (string?)null), (defaults.Sort, defaults.Offset, defaults.Limit, defaults.Search));
        Assert.Throws<FormatException>(() => ListRequest.Parse(Query(("status", "exploded"))));
        Assert.Throws<FormatException>(() => ListRequest.Parse(Query(("sort", "7"))));
        Assert.Throws<FormatException>(() => ListRequest.Parse(Query(("limit", "0"))));
        Assert.Throws<FormatException>(() => ListRequest.Parse(Query(("limit", "501"))));
        Assert.Throws<FormatException>(() => ListRequest.Parse(Query(("offset", "-1"))));
        Assert.Throws<FormatException>(() => ListRequest.Parse(Query(("since", "yesterday"))));
    }

    [Fact]
    public void The_heatmap_has_one_cell_per_value_with_its_value_in_the_title()
    {
        var html = new HtmlWriter();
        string[] rows = ["math", "<code>"];
        string[] columns = ["model.layers.0", "model.layers.1", "lm_head"];
        Heatmap.Write(html, "h", "caption", rows, columns, (r, c) => r + (c / 10.0));
        var svg = html.ToString();
        Assert.Equal(6, svg.Split("<rect class=\"cell\"").Length - 1);
        Assert.Contains("math &#xD7; model.layers.1: 0.1000", svg, StringComparison.Ordinal);
        Assert.DoesNotContain("<code>", svg, StringComparison.Ordinal);
    }

    [Fact]
    public void The_stylesheet_is_embedded_in_the_assembly()
    {
        Assert.Contains("SensMerging.Web.site.css", RegistryWebUi.AssetNames());
    }

    private static QueryCollection Query(params (string Name, string Value)[] values) =>
        new(values.ToDictionary(v => v.Name, v => new StringValues(v.Value)));
}
