using System.Globalization;
using Microsoft.AspNetCore.Http;
using SensMerging.Host.Cli;
using SensMerging.Host.Plugins;
using SensMerging.Hub.Server;
using SensMerging.Registry;

namespace SensMerging.Host.Serving.Web;

/// <summary>The server-rendered pages: models (<c>/</c>), model (<c>/merges/&lt;id&gt;</c>, <c>/&lt;org&gt;/&lt;name&gt;</c>), compare, plugins.</summary>
internal sealed partial class RegistryPages
{
    /// <summary>Merges per page of the models page.</summary>
    public const int PageSize = 50;

    private readonly IMergeRegistry _registry;
    private readonly PluginCatalog _plugins;
    private readonly IHubRepositorySource _hub;
    private readonly IHubRepositorySource? _folders;

    public RegistryPages(IMergeRegistry registry, PluginCatalog plugins, IHubRepositorySource hub, IHubRepositorySource? folders)
    {
        _registry = registry;
        _plugins = plugins;
        _hub = hub;
        _folders = folders;
    }

    // ---------------------------------------------------------------- models page

    public async Task<PageResult> ModelsAsync(HttpContext context, CancellationToken ct)
    {
        var request = ListRequest.Parse(context.Request.Query);
        var query = request.Query;
        // One more than the page to know whether a next page exists, without counting every match.
        var merges = await _registry.ListAsync(query with { Limit = query.Limit + 1 }, ct);
        var hasNext = merges.Count > query.Limit;
        var shown = hasNext ? merges.Take(query.Limit).ToList() : merges.ToList();
        var total = await _registry.CountAsync(ct);
        var repos = _folders is null ? [] : await _folders.ListRepositoriesAsync(ct);
        var matchingRepos = query.Search is { } s ? repos.Where(r => r.Contains(s, StringComparison.OrdinalIgnoreCase)).ToList() : [.. repos];

        var html = new HtmlWriter();
        Layout.Begin(html, "Models", "models");
        html.Raw("<h1>Models</h1><p class=\"lede\">").Text($"{total.ToString("N0", CultureInfo.InvariantCulture)} merges in the registry")
            .Text(repos.Count > 0 ? $", {repos.Count} repositories served from --repos" : string.Empty).Raw(".</p>");
        FilterForm(html, query);
        html.Raw("<section aria-labelledby=\"merges-h\"><h2 id=\"merges-h\">Merges</h2>");
        SortLinks(html, request);
        if (shown.Count == 0)
        {
            html.Raw("<p class=\"empty\">No merge matches these filters.</p>");
        }
        else
        {
            html.Raw("<div class=\"table-wrap\"><table class=\"models\" id=\"merge-list\"><caption class=\"sr-only\">Merges, ")
                .Text(query.Sort.ToString().ToLowerInvariant()).Raw(" first</caption><thead><tr><th scope=\"col\">Model</th><th scope=\"col\">Method</th>")
                .Raw("<th scope=\"col\">Status</th><th scope=\"col\">Created</th><th scope=\"col\">Inputs</th><th scope=\"col\">Scores</th><th scope=\"col\">Tags</th></tr></thead><tbody>");
            foreach (var m in shown)
            {
                html.Raw("<tr class=\"merge-row\"").Attr("data-id", m.Id).Raw("><td>")
                    .Link("/merges/" + HtmlWriter.Url(m.Id), RegistryRepositorySource.RepoIdOf(m), "model-link")
                    .Raw("<div class=\"muted mono\">").Text(m.Id).Raw("</div></td><td class=\"mono\">").Text(m.Method).Raw("</td><td>");
                Status(html, m.Status);
                html.Raw("</td><td class=\"nowrap\">").Text(HtmlWriter.Time(m.CreatedAt)).Raw("</td><td class=\"inputs\">");
                foreach (var input in m.Inputs)
                {
                    html.Raw("<div class=\"mono\">").Text(input).Raw("</div>");
                }
                html.Raw("</td><td class=\"mono\">");
                foreach (var (key, value) in m.Scores)
                {
                    html.Raw("<div>").Text(key).Raw(" <b>").Text(HtmlWriter.Number(value)).Raw("</b></div>");
                }
                html.Raw("</td><td>");
                Tags(html, m.Tags);
                html.Raw("</td></tr>");
            }
            html.Raw("</tbody></table></div>");
        }
        html.Raw("<nav class=\"pager\" aria-label=\"Pages\">");
        var page = (query.Offset / Math.Max(1, query.Limit)) + 1;
        if (query.Offset > 0)
        {
            html.Link("/" + request.With(("offset", Math.Max(0, query.Offset - query.Limit).ToString(CultureInfo.InvariantCulture))), "← Previous page", "prev");
        }
        html.Raw("<span>").Text($"Page {page} · merges {(shown.Count == 0 ? 0 : query.Offset + 1)}–{query.Offset + shown.Count}").Raw("</span>");
        if (hasNext)
        {
            html.Link("/" + request.With(("offset", (query.Offset + query.Limit).ToString(CultureInfo.InvariantCulture))), "Next page →", "next");
        }
        html.Raw("</nav></section>");

        if (repos.Count > 0)
        {
            html.Raw("<section aria-labelledby=\"repos-h\"><h2 id=\"repos-h\">Repositories</h2><ul class=\"repos\">");
            foreach (var repo in matchingRepos)
            {
                html.Raw("<li>").Link("/" + HtmlWriter.UrlPath(repo), repo, "repo-link").Raw("</li>");
            }
            html.Raw("</ul></section>");
        }
        Layout.End(html);
        return new PageResult(StatusCodes.Status200OK, html.ToString());
    }

    private void FilterForm(HtmlWriter html, MergeQuery query)
    {
        html.Raw("<form class=\"filters\" method=\"get\" action=\"/\" role=\"search\">");
        Field(html, "q", "Search", query.Search, "name, tag or input model", "search");
        html.Raw("<label>Strategy<select name=\"strategy\"><option value=\"\">any</option>");
        foreach (var name in ComponentNames(ComponentKind.Strategy, query.Strategy))
        {
            html.Raw("<option").Attr("value", name).Raw(string.Equals(name, query.Strategy, StringComparison.OrdinalIgnoreCase) ? " selected>" : ">").Text(name).Raw("</option>");
        }
        html.Raw("</select></label><label>Decorator<select name=\"decorator\"><option value=\"\">any</option>");
        foreach (var name in ComponentNames(ComponentKind.Decorator, query.Decorator))
        {
            html.Raw("<option").Attr("value", name).Raw(string.Equals(name, query.Decorator, StringComparison.OrdinalIgnoreCase) ? " selected>" : ">").Text(name).Raw("</option>");
        }
        html.Raw("</select></label><label>Status<select name=\"status\"><option value=\"\">any</option>");
        foreach (var status in Enum.GetValues<MergeStatus>())
        {
            var text = status.ToString().ToLowerInvariant();
            html.Raw("<option").Attr("value", text).Raw(query.Status == status ? " selected>" : ">").Text(text).Raw("</option>");
        }
        html.Raw("</select></label>");
        Field(html, "since", "Since", query.Since?.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), "yyyy-mm-dd", "date");
        Field(html, "until", "Before", query.Until?.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), "yyyy-mm-dd", "date");
        Field(html, "model", "Model", query.Model, "repo id or folder", "text");
        html.Raw("<label>Sort<select name=\"sort\">");
        foreach (var sort in Enum.GetValues<MergeSort>())
        {
            var text = sort.ToString().ToLowerInvariant();
            html.Raw("<option").Attr("value", text).Raw(query.Sort == sort ? " selected>" : ">").Text(text == "score" ? "evaluation score" : text).Raw("</option>");
        }
        html.Raw("</select></label>");
        Field(html, "score", "Score", query.ScoreKey, "task/metric", "text");
        html.Raw("<button type=\"submit\">Apply</button> <a href=\"/\">Clear</a></form>");
    }

    private IEnumerable<string> ComponentNames(ComponentKind kind, string? current)
    {
        var names = _plugins.Components(kind).Select(c => c.Component.Name).ToList();
        if (!string.IsNullOrWhiteSpace(current) && !names.Contains(current, StringComparer.OrdinalIgnoreCase))
        {
            names.Add(current);
        }
        return names.Distinct(StringComparer.OrdinalIgnoreCase).Order(StringComparer.Ordinal);
    }

    private static void Field(HtmlWriter html, string name, string label, string? value, string placeholder, string type)
    {
        html.Raw("<label>").Text(label).Raw("<input").Attr("type", type).Attr("name", name).Attr("value", value).Attr("placeholder", placeholder).Raw("></label>");
    }

    private static void SortLinks(HtmlWriter html, ListRequest request)
    {
        html.Raw("<p class=\"sorts\">Sort: ");
        foreach (var sort in Enum.GetValues<MergeSort>())
        {
            var text = sort.ToString().ToLowerInvariant();
            if (request.Query.Sort == sort)
            {
                html.Raw("<strong aria-current=\"true\">").Text(text).Raw("</strong> ");
            }
            else
            {
                html.Link("/" + request.With(("sort", sort == MergeSort.Newest ? null : text), ("offset", null)), text).Raw(" ");
            }
        }
        html.Raw("</p>");
    }

    // ---------------------------------------------------------------- compare page

    public async Task<PageResult> CompareAsync(HttpContext context, CancellationToken ct)
    {
        var leftId = context.Request.Query["left"].ToString().Trim();
        var rightId = context.Request.Query["right"].ToString().Trim();
        var html = new HtmlWriter();
        Layout.Begin(html, "Compare", "compare");
        html.Raw("<h1>Compare two merges</h1><form class=\"filters\" method=\"get\" action=\"/compare\">");
        Field(html, "left", "Left merge id", leftId, "m-…", "text");
        Field(html, "right", "Right merge id", rightId, "m-…", "text");
        html.Raw("<button type=\"submit\">Compare</button></form>");
        if (leftId.Length == 0 || rightId.Length == 0)
        {
            html.Raw("<p>Give two merge ids (or unique prefixes). The comparison is <code>sensmerge registry diff</code>.</p>");
            Layout.End(html);
            return new PageResult(StatusCodes.Status200OK, html.ToString());
        }
        var left = await _registry.GetAsync(leftId, ct) ?? throw new MergeNotFoundException(leftId);
        var right = await _registry.GetAsync(rightId, ct) ?? throw new MergeNotFoundException(rightId);
        var diff = MergeDiff.Compare(left, right);

        html.Raw("<div class=\"table-wrap\"><table class=\"compare\" id=\"compare-summary\"><thead><tr><th scope=\"col\"></th><th scope=\"col\">")
            .Link("/merges/" + HtmlWriter.Url(left.Id), left.Id).Raw("</th><th scope=\"col\">").Link("/merges/" + HtmlWriter.Url(right.Id), right.Id).Raw("</th></tr></thead><tbody>");
        SideBySide(html, "method", MergeSummary.MethodName(left), MergeSummary.MethodName(right));
        SideBySide(html, "status", left.Status.ToString().ToLowerInvariant(), right.Status.ToString().ToLowerInvariant());
        SideBySide(html, "created", HtmlWriter.Time(left.CreatedAt), HtmlWriter.Time(right.CreatedAt));
        SideBySide(html, "inputs", string.Join("\n", left.Inputs.Select(i => i.Reference)), string.Join("\n", right.Inputs.Select(i => i.Reference)));
        SideBySide(html, "parameters", string.Join("\n", left.Parameters.Select(p => p.Key + "=" + p.Value)), string.Join("\n", right.Parameters.Select(p => p.Key + "=" + p.Value)));
        SideBySide(html, "seed", left.Seed?.ToString(CultureInfo.InvariantCulture), right.Seed?.ToString(CultureInfo.InvariantCulture));
        SideBySide(html, "tags", string.Join(", ", left.Tags), string.Join(", ", right.Tags));
        SideBySide(html, "scores", string.Join("\n", MergeSummary.From(left).Scores.Select(s => s.Key + " " + HtmlWriter.Number(s.Value))),
            string.Join("\n", MergeSummary.From(right).Scores.Select(s => s.Key + " " + HtmlWriter.Number(s.Value))));
        html.Raw("</tbody></table></div>");

        html.Raw("<section id=\"diff\" aria-labelledby=\"diff-h\"><h2 id=\"diff-h\">Differences</h2>");
        if (diff.IsEmpty)
        {
            html.Raw("<p>No difference in settings, parameters, inputs or coefficients.</p>");
        }
        ChangeTable(html, "Settings", diff.Fields);
        ChangeTable(html, "Parameters", diff.Parameters);
        if (diff.Inputs.Count > 0)
        {
            html.Raw("<h3>Inputs</h3><ul>");
            foreach (var input in diff.Inputs)
            {
                html.Raw("<li><b>").Text(input.Name).Raw("</b> ").Text(input.Change);
                foreach (var d in input.Details)
                {
                    html.Raw("<div class=\"mono\">").Text($"{d.Name}: {d.Left ?? "-"} → {d.Right ?? "-"}").Raw("</div>");
                }
                html.Raw("</li>");
            }
            html.Raw("</ul>");
        }
        if (diff.Coefficients.Count > 0)
        {
            html.Raw("<h3>Coefficients</h3>");
            var experts = diff.Coefficients.Select(c => c.Expert).Distinct(StringComparer.Ordinal).ToList();
            var groups = diff.Coefficients.Select(c => c.LayerGroup).Distinct(StringComparer.Ordinal).ToList();
            var byCell = diff.Coefficients.ToDictionary(c => (c.Expert, c.LayerGroup));
            Heatmap.Write(html, "coefficient-diff", $"Coefficient differences ({right.Id} − {left.Id}), experts × layer groups",
                experts, groups, (r, c) => byCell.TryGetValue((experts[r], groups[c]), out var change) ? change.Delta : null, diverging: true);
            html.Raw("<details><summary>").Text($"{diff.Coefficients.Count} coefficients differ").Raw("</summary><div class=\"table-wrap\"><table><thead><tr>")
                .Raw("<th scope=\"col\">expert</th><th scope=\"col\">layer group</th><th scope=\"col\">left</th><th scope=\"col\">right</th><th scope=\"col\">difference</th></tr></thead><tbody>");
            foreach (var c in diff.Coefficients)
            {
                html.Raw("<tr>").Cell(c.Expert).Cell(c.LayerGroup).Cell(c.Left is { } l ? HtmlWriter.Number(l) : "-")
                    .Cell(c.Right is { } r ? HtmlWriter.Number(r) : "-").Cell(c.Delta is { } d ? HtmlWriter.Number(d) : "-").Raw("</tr>");
            }
            html.Raw("</tbody></table></div></details>");
        }
        html.Raw("</section>");
        Layout.End(html);
        return new PageResult(StatusCodes.Status200OK, html.ToString());
    }

    private static void SideBySide(HtmlWriter html, string name, string? left, string? right)
    {
        var differs = !string.Equals(left, right, StringComparison.Ordinal);
        html.Raw(differs ? "<tr class=\"differs\">" : "<tr>").Element("th", name).Raw("<td class=\"pre\">").Text(left ?? "-").Raw("</td><td class=\"pre\">").Text(right ?? "-").Raw("</td></tr>");
    }

    private static void ChangeTable(HtmlWriter html, string title, IReadOnlyList<FieldChange> changes)
    {
        if (changes.Count == 0)
        {
            return;
        }
        html.Element("h3", title).Raw("<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">name</th><th scope=\"col\">left</th><th scope=\"col\">right</th></tr></thead><tbody>");
        foreach (var c in changes)
        {
            html.Raw("<tr>").Cell(c.Name).Cell(c.Left ?? "-").Cell(c.Right ?? "-").Raw("</tr>");
        }
        html.Raw("</tbody></table></div>");
    }

    // ---------------------------------------------------------------- plugins page

    public Task<PageResult> PluginsAsync(HttpContext context, CancellationToken cancellationToken)
    {
        var list = PluginsCommand.ToJson(_plugins);
        var html = new HtmlWriter();
        Layout.Begin(html, "Plugins", "plugins");
        html.Raw("<h1>Plugins</h1><p class=\"lede\">").Text($"What this host loaded from {list.PluginsFile ?? "(no plugins file)"}; host contract {list.HostContractVersion}. Same content as ")
            .Raw("<code>sensmerge plugins list</code> and <a href=\"/api/registry/plugins\">/api/registry/plugins</a>.</p>");
        foreach (var p in list.Plugins)
        {
            html.Raw("<section class=\"plugin\"><h2>").Text(p.Id).Raw(" ");
            Badge(html, p.Status.ToLowerInvariant(), p.Status);
            html.Raw("</h2><dl class=\"facts\">");
            Fact(html, "kinds", string.Join(", ", p.Kinds));
            Fact(html, "version", p.Version);
            Fact(html, "contract", p.ContractVersion);
            Fact(html, "source", p.Source);
            Fact(html, "assembly sha256", p.AssemblySha256);
            if (p.Reason is not null)
            {
                Fact(html, "reason", p.Reason);
            }
            html.Raw("</dl>");
            if (p.Description is not null)
            {
                html.Element("p", p.Description);
            }
            foreach (var c in p.Components)
            {
                html.Raw("<h3>").Text($"{c.Kind} {c.Name}").Raw("</h3>").Element("p", c.Description);
                if (c.Parameters.Count == 0)
                {
                    continue;
                }
                html.Raw("<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">parameter</th><th scope=\"col\">type</th><th scope=\"col\">default</th>")
                    .Raw("<th scope=\"col\">scope</th><th scope=\"col\">range</th><th scope=\"col\">description</th></tr></thead><tbody>");
                foreach (var s in c.Parameters)
                {
                    var range = s.AllowedValues is { Count: > 0 } allowed ? string.Join(" | ", allowed)
                        : s.Minimum is not null || s.Maximum is not null ? $"{s.Minimum?.ToString(CultureInfo.InvariantCulture) ?? "…"} – {s.Maximum?.ToString(CultureInfo.InvariantCulture) ?? "…"}" : string.Empty;
                    html.Raw("<tr>").Cell(s.Name).Cell(s.Type).Cell(Convert.ToString(s.Default, CultureInfo.InvariantCulture) ?? "-").Cell(s.Scope).Cell(range).Cell(s.Description).Raw("</tr>");
                }
                html.Raw("</tbody></table></div>");
            }
            html.Raw("</section>");
        }
        Layout.End(html);
        return Task.FromResult(new PageResult(StatusCodes.Status200OK, html.ToString()));
    }

    // ---------------------------------------------------------------- shared pieces

    public static PageResult Error(int status, string message)
    {
        var html = new HtmlWriter();
        Layout.Begin(html, status == StatusCodes.Status404NotFound ? "Not found" : "Error", string.Empty);
        html.Raw("<h1>").Text(status == StatusCodes.Status404NotFound ? "Not found" : "Cannot show this").Raw("</h1><p class=\"error\" role=\"alert\">").Text(message)
            .Raw("</p><p><a href=\"/\">All models</a></p>");
        Layout.End(html);
        return new PageResult(status, html.ToString());
    }

    private static void Status(HtmlWriter html, MergeStatus status) => Badge(html, status.ToString().ToLowerInvariant(), status.ToString().ToLowerInvariant());

    private static void Badge(HtmlWriter html, string kind, string text) =>
        html.Raw("<span").Attr("class", "badge badge-" + kind).Raw(">").Text(text).Raw("</span>");

    private static void Tags(HtmlWriter html, IEnumerable<string> tags)
    {
        foreach (var tag in tags)
        {
            html.Raw("<span class=\"tag\">").Text(tag).Raw("</span> ");
        }
    }

    private static void Fact(HtmlWriter html, string name, string? value) =>
        html.Element("dt", name).Raw("<dd>").Text(value ?? "-").Raw("</dd>");

    /// <summary>Page frame: header with navigation, skip link, the stylesheet served by the project.</summary>
    private static class Layout
    {
        public static void Begin(HtmlWriter html, string title, string current)
        {
            html.Raw("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
                .Raw("<title>").Text(title).Raw(" · sensmerge hub</title><link rel=\"stylesheet\" href=\"/assets/site.css\"></head><body>")
                .Raw("<a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\"><a class=\"brand\" href=\"/\">sensmerge hub</a><nav aria-label=\"Main\">");
            Nav(html, "/", "Models", current == "models");
            Nav(html, "/compare", "Compare", current == "compare");
            Nav(html, "/plugins", "Plugins", current == "plugins");
            Nav(html, "/api/registry/merges", "API", false);
            html.Raw("</nav></header><main id=\"main\" tabindex=\"-1\">");
        }

        public static void End(HtmlWriter html) =>
            html.Raw("</main><footer>Read-only view of the sensmerge registry. Pages are <code>sensmerge registry</code> queries; JSON under <code>/api/registry</code>.</footer></body></html>");

        private static void Nav(HtmlWriter html, string href, string text, bool current)
        {
            html.Raw("<a").Attr("href", href);
            if (current)
            {
                html.Raw(" aria-current=\"page\"");
            }
            html.Raw(">").Text(text).Raw("</a>");
        }
    }
}
