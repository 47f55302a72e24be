using System.Text;

namespace SensMerging.Core.Models;

/// <summary>One input of a merge as the model card lists it.</summary>
/// <param name="Name">How the config names the model (a folder or <c>org/name@revision</c>).</param>
/// <param name="Role"><c>base</c> or <c>expert</c>.</param>
/// <param name="Details">Optional extra text (revision, weight...).</param>
public sealed record ModelCardInput(string Name, string Role, string? Details = null);

/// <summary>
/// The content of a merged model's <c>README.md</c>. The caller decides what goes in (the engine fills a default from
/// the plan; the CLI can add a registry id, scores, coefficients) and <see cref="Render"/> writes Hugging Face style
/// markdown with YAML front matter.
/// </summary>
public sealed record ModelCard
{
    /// <summary>Heading of the card.</summary>
    public required string Title { get; init; }

    /// <summary>The merge method (for example <c>ties</c> or <c>sens(ties)</c>).</summary>
    public required string Method { get; init; }

    /// <summary>The base and the experts.</summary>
    public IReadOnlyList<ModelCardInput> Inputs { get; init; } = [];

    /// <summary>Parameters as key/value text, in the order given.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Parameters { get; init; } = [];

    /// <summary>Extra markdown appended after the generated sections (config, registry id, notes).</summary>
    public string? BodyMarkdown { get; init; }

    /// <summary>Tags for the front matter; <c>merge</c> is always included.</summary>
    public IReadOnlyList<string> Tags { get; init; } = [];

    /// <summary>The card as markdown.</summary>
    public string Render()
    {
        var sb = new StringBuilder();
        sb.Append("---\n");
        var baseModels = Inputs.Where(i => i.Role == "base").Select(i => i.Name).ToList();
        if (baseModels.Count > 0)
        {
            sb.Append("base_model:\n");
            foreach (var b in baseModels)
            {
                sb.Append("- ").Append(Yaml(b)).Append('\n');
            }
        }
        sb.Append("tags:\n");
        foreach (var tag in new[] { "merge", "sens-merging" }.Concat(Tags).Distinct(StringComparer.Ordinal))
        {
            sb.Append("- ").Append(Yaml(tag)).Append('\n');
        }
        sb.Append("---\n\n");
        sb.Append("# ").Append(Title).Append("\n\n");
        sb.Append("This model was merged with SensMerging.Host using the `").Append(Method).Append("` method.\n\n");
        if (Inputs.Count > 0)
        {
            sb.Append("## Inputs\n\n| Model | Role | Details |\n|---|---|---|\n");
            foreach (var i in Inputs)
            {
                sb.Append("| ").Append(Cell(i.Name)).Append(" | ").Append(Cell(i.Role)).Append(" | ").Append(Cell(i.Details ?? string.Empty)).Append(" |\n");
            }
            sb.Append('\n');
        }
        if (Parameters.Count > 0)
        {
            sb.Append("## Parameters\n\n| Parameter | Value |\n|---|---|\n");
            foreach (var (k, v) in Parameters)
            {
                sb.Append("| ").Append(Cell(k)).Append(" | ").Append(Cell(v)).Append(" |\n");
            }
            sb.Append('\n');
        }
        if (!string.IsNullOrWhiteSpace(BodyMarkdown))
        {
            sb.Append(BodyMarkdown.TrimEnd()).Append('\n');
        }
        return sb.ToString();
    }

    private static string Cell(string text) => text.Replace("|", "\\|", StringComparison.Ordinal).Replace('\n', ' ');

    private static string Yaml(string text) => "\"" + text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}
