using Ganss.Xss;
using Markdig;

namespace SensMerging.Host.Serving.Web;

/// <summary>
/// Renders a model card (README.md, Markdown with YAML front matter) to HTML that is safe to embed: raw HTML in the
/// Markdown is shown as text (Markdig with HTML disabled), and the result goes through HtmlSanitizer, which keeps only
/// harmless tags and attributes and drops links whose scheme is not http, https or mailto (<c>javascript:</c> among them).
/// </summary>
internal static class ModelCardRenderer
{
    /// <summary>Cards larger than this are cut (a card is a README, not a data file).</summary>
    public const int MaxCardChars = 512 * 1024;

    private static readonly MarkdownPipeline Pipeline = new MarkdownPipelineBuilder()
        .DisableHtml()
        .UseYamlFrontMatter()
        .UsePipeTables()
        .UseEmphasisExtras()
        .UseTaskLists()
        .UseAutoLinks()
        .Build();

    /// <summary>Renders a small card once, so that the first real one does not pay for the libraries' first use.</summary>
    public static void WarmUp() => Render("# Card\n\nSome *text*, a [link](https://example.com) and a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");

    /// <summary>The card as sanitised HTML.</summary>
    public static string Render(string markdown)
    {
        ArgumentNullException.ThrowIfNull(markdown);
        if (markdown.Length > MaxCardChars)
        {
            markdown = markdown[..MaxCardChars];
        }
        var html = Markdown.ToHtml(markdown, Pipeline);
        // A fresh sanitizer per card: its settings are per instance and a card is rendered once per page view.
        var sanitizer = new HtmlSanitizer();
        sanitizer.AllowedSchemes.Clear();
        sanitizer.AllowedSchemes.Add("http");
        sanitizer.AllowedSchemes.Add("https");
        sanitizer.AllowedSchemes.Add("mailto");
        sanitizer.AllowedAttributes.Remove("style");
        sanitizer.AllowedTags.Remove("form");
        sanitizer.AllowedTags.Remove("input");
        sanitizer.AllowedTags.Remove("button");
        sanitizer.AllowedTags.Remove("textarea");
        sanitizer.AllowedTags.Remove("select");
        return sanitizer.Sanitize(html);
    }
}
