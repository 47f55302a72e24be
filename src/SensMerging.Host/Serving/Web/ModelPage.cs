using System.Globalization;
using Microsoft.AspNetCore.Http;
using SensMerging.Hub.Server;
using SensMerging.Registry;

namespace SensMerging.Host.Serving.Web;

/// <summary>The model page: a merge (<c>/merges/&lt;id&gt;</c>, or the repo id it is served as) or a <c>--repos</c> repository.</summary>
internal sealed partial class RegistryPages
{
    /// <summary>Most merges listed on a repository page as having used it.</summary>
    private const int LineageListLimit = 50;

    /// <summary>The model page's lineage: four generations each way, eight merges per generation (the rest counted).</summary>
    private static readonly LineageBounds PageLineage = new() { Depth = 4, Width = 8 };

    public async Task<PageResult> ModelAsync(HttpContext context, string org, string name, CancellationToken ct)
    {
        var repoId = org + "/" + name;
        if (string.Equals(org, RegistryRepositorySource.Organization, StringComparison.Ordinal)
            && await _registry.GetAsync(name, ct) is { } record)
        {
            return await MergeAsync(context, record, ct);
        }
        var folderRepos = await FolderReposAsync(ct);
        if (folderRepos.Contains(repoId) && (await _hub.GetRevisionAsync(repoId, "main", ct)).Snapshot is { } snapshot)
        {
            return await RepositoryAsync(context, snapshot, ct);
        }
        // A merge served under the repo id its record names (only its producers are looked up, not what used it).
        var producer = (await _registry.ProducersAsync(repoId, ct)).FirstOrDefault(m => string.Equals(m.OutputRepoId, repoId, StringComparison.OrdinalIgnoreCase));
        if (producer is not null && await _registry.GetAsync(producer.Id, ct) is { } produced)
        {
            return await MergeAsync(context, produced, ct);
        }
        throw new KeyNotFoundException($"no merge and no repository '{repoId}' here");
    }

    private async Task<HashSet<string>> FolderReposAsync(CancellationToken ct) =>
        _folders is null ? [] : new HashSet<string>(await _folders.ListRepositoriesAsync(ct), StringComparer.Ordinal);

    private static string Endpoint(HttpContext context) => $"{context.Request.Scheme}://{context.Request.Host}";

    private async Task<PageResult> MergeAsync(HttpContext context, MergeRecord record, CancellationToken ct)
    {
        var summary = MergeSummary.From(record);
        var repoId = RegistryRepositorySource.RepoIdOf(summary);
        var served = record.Status == MergeStatus.Succeeded && record.Outputs is { } o && Directory.Exists(o.Folder);
        var folderRepos = await FolderReposAsync(ct);

        // Lineage: one bounded walk over the registry's model-key indexes, both ways (what made its inputs, what used
        // its output), whatever the size of the registry or the popularity of its inputs.
        var graph = await _registry.LineageGraphAsync(record.Id, PageLineage, ct)
            ?? new LineageGraph(summary, [new LineageGraphNode(summary, 0)], [], []);
        var lineage = new LineageView(graph);

        var html = new HtmlWriter();
        Layout.Begin(html, repoId, string.Empty);
        html.Raw("<article class=\"model\"><header class=\"model-head\"><h1 class=\"mono\">").Text(repoId).Raw("</h1><p>");
        Status(html, record.Status);
        html.Raw(" <span class=\"mono method\">").Text(summary.Method).Raw("</span> · id <span class=\"mono\" id=\"merge-id\">").Text(record.Id).Raw("</span> · created ")
            .Text(HtmlWriter.Time(record.CreatedAt)).Raw("</p><p class=\"tags\">");
        Tags(html, record.Tags);
        html.Raw("</p><nav class=\"toc\" aria-label=\"On this page\">");
        foreach (var (id, text) in new[] { ("card", "Card"), ("files", "Files"), ("use", "Use"), ("provenance", "Provenance"), ("parameters", "Parameters"),
            ("sens", "Sens tables"), ("heatmap", "Coefficients"), ("evaluations", "Evaluations"), ("config", "Config"), ("status", "Status"), ("lineage", "Lineage") })
        {
            html.Link("#" + id, text);
        }
        html.Raw("</nav></header>");

        if (record.Error is { } error)
        {
            html.Raw("<div class=\"error\" role=\"alert\" id=\"error\"><b>").Text(record.Status == MergeStatus.Cancelled ? "Cancelled" : "Failed").Raw(":</b> <span class=\"mono\">")
                .Text(error.Type).Raw("</span><pre>").Text(error.Message).Raw("</pre>");
            if (error.Detail is not null)
            {
                html.Raw("<details><summary>Details</summary><pre>").Text(error.Detail).Raw("</pre></details>");
            }
            html.Raw("</div>");
        }

        // Card
        html.Raw("<section id=\"card\" aria-labelledby=\"card-h\"><h2 id=\"card-h\">Model card</h2>");
        var card = record.Outputs is { } outs ? Path.Combine(outs.Folder, "README.md") : null;
        if (card is not null && File.Exists(card))
        {
            html.Raw("<div class=\"card-body\">").Raw(ModelCardRenderer.Render(await File.ReadAllTextAsync(card, ct))).Raw("</div>");
        }
        else
        {
            html.Raw("<p class=\"empty\">No model card (the merge wrote no output, or its folder is gone).</p>");
        }
        html.Raw("</section>");

        // Files
        html.Raw("<section id=\"files\" aria-labelledby=\"files-h\"><h2 id=\"files-h\">Files and versions</h2>");
        if (record.Outputs is { } written)
        {
            html.Raw("<p>").Text($"{written.Files.Count} files, {HtmlWriter.Bytes(written.TotalBytes)}, {written.TensorCount} tensors, in ").Raw("<span class=\"mono\">")
                .Text(written.Folder).Raw("</span>").Text(served ? string.Empty : " (not served: the folder is gone)").Raw("</p>");
            FileTable(html, written.Files.Select(f => (f.Path, f.Size, (string?)f.Sha256)), served ? repoId : null, "main");
        }
        else
        {
            html.Raw("<p class=\"empty\">No output files.</p>");
        }
        html.Raw("</section>");

        // Use
        html.Raw("<section id=\"use\" aria-labelledby=\"use-h\"><h2 id=\"use-h\">Use this model</h2>");
        if (served)
        {
            PullCommands(html, Endpoint(context), repoId);
        }
        else
        {
            html.Raw("<p class=\"empty\">Only succeeded merges whose output folder exists are served.</p>");
        }
        html.Raw("</section>");

        // Provenance
        html.Raw("<section id=\"provenance\" aria-labelledby=\"prov-h\"><h2 id=\"prov-h\">Provenance</h2><h3>Inputs</h3><div class=\"table-wrap\"><table id=\"inputs\"><thead><tr>")
            .Raw("<th scope=\"col\">role</th><th scope=\"col\">name</th><th scope=\"col\">reference</th><th scope=\"col\">revision</th><th scope=\"col\">commit</th><th scope=\"col\">files</th><th scope=\"col\">made by</th></tr></thead><tbody>");
        foreach (var input in record.Inputs.OrderBy(i => i.Role == ModelRole.Base ? 0 : 1))
        {
            html.Raw("<tr>").Cell(input.Role.ToString().ToLowerInvariant()).Cell(input.Name).Raw("<td class=\"mono\">");
            var repo = RepoOf(input.Reference);
            if (repo is not null && folderRepos.Contains(repo))
            {
                html.Link("/" + HtmlWriter.UrlPath(repo), input.Reference, "input-link");
            }
            else
            {
                html.Text(input.Reference);
            }
            html.Raw("</td>").Cell(input.RequestedRevision ?? "-").Raw("<td class=\"mono\">").Text(input.ResolvedCommit ?? "-").Raw("</td>")
                .Cell(input.Files.Count.ToString(CultureInfo.InvariantCulture)).Raw("<td>");
            foreach (var p in lineage.ProducersOf(record.Id, input.Reference))
            {
                html.Link("/merges/" + HtmlWriter.Url(p.Id), p.Id, "lineage-link mono").Raw(" ");
            }
            html.Raw("</td></tr>");
        }
        html.Raw("</tbody></table></div><h3>Plugins</h3><div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">role</th><th scope=\"col\">component</th>")
            .Raw("<th scope=\"col\">plugin</th><th scope=\"col\">version</th><th scope=\"col\">contract</th><th scope=\"col\">assembly sha256</th></tr></thead><tbody>");
        var plugins = new List<(string Role, PluginRef Plugin)>();
        if (record.Strategy is not null)
        {
            plugins.Add(("strategy", record.Strategy));
        }
        plugins.AddRange(record.Decorators.Select(d => ("decorator", d.Plugin)));
        plugins.AddRange(record.Scorers.Select(s => ("scorer", s)));
        foreach (var (role, p) in plugins)
        {
            html.Raw("<tr>").Cell(role).Cell(p.Component).Cell(p.PluginId).Cell(p.Version).Cell(p.ContractVersion).Raw("<td class=\"mono hash\">").Text(p.AssemblySha256).Raw("</td></tr>");
        }
        html.Raw("</tbody></table></div><dl class=\"facts\">");
        Fact(html, "seed", record.Seed?.ToString(CultureInfo.InvariantCulture));
        Fact(html, "dtype", record.Dtype);
        Fact(html, "host version", record.HostVersion);
        html.Raw("</dl></section>");

        // Parameters
        html.Raw("<section id=\"parameters\" aria-labelledby=\"par-h\"><h2 id=\"par-h\">Parameters</h2>");
        ParameterTable(html, "Global", record.Parameters);
        foreach (var (model, map) in record.ModelParameters)
        {
            ParameterTable(html, "Model " + model, map);
        }
        foreach (var d in record.Decorators)
        {
            ParameterTable(html, "Decorator " + d.Plugin.Component + " (configured)", d.Parameters);
        }
        foreach (var (decorator, map) in record.DecoratorSettings)
        {
            ParameterTable(html, "Decorator " + decorator + " (in effect)", map);
        }
        html.Raw("</section>");

        // Sens tables and heatmap
        html.Raw("<section id=\"sens\" aria-labelledby=\"sens-h\"><h2 id=\"sens-h\">Sens tables</h2>");
        var tables = record.ScoreTables.Concat(record.Coefficients?.Tables ?? []).ToList();
        if (tables.Count == 0)
        {
            html.Raw("<p class=\"empty\">No score tables (no decorator scored this merge).</p>");
        }
        foreach (var table in tables)
        {
            ScoreTableHtml(html, table);
        }
        html.Raw("</section><section id=\"heatmap\" aria-labelledby=\"heat-h\"><h2 id=\"heat-h\">Coefficients</h2>");
        if (record.Coefficients is { Experts.Count: > 0 } coefficients)
        {
            Heatmap.Write(html, "coefficient-heatmap", $"Coefficients applied by {coefficients.Decorator}: experts × layer groups (hover a cell for its value)",
                coefficients.Experts, coefficients.LayerGroups, (r, c) => coefficients.Values[r][c]);
        }
        else
        {
            html.Raw("<p class=\"empty\">No coefficients recorded.</p>");
        }
        html.Raw("</section>");

        // Evaluations
        html.Raw("<section id=\"evaluations\" aria-labelledby=\"eval-h\"><h2 id=\"eval-h\">Evaluations</h2>");
        if (record.Evaluations.Count == 0)
        {
            html.Raw("<p class=\"empty\">None recorded.</p>");
        }
        else
        {
            html.Raw("<div class=\"table-wrap\"><table id=\"evaluation-table\"><thead><tr><th scope=\"col\">model</th><th scope=\"col\">task</th><th scope=\"col\">metric</th>")
                .Raw("<th scope=\"col\">value</th><th scope=\"col\">samples</th><th scope=\"col\">recorded</th></tr></thead><tbody>");
            foreach (var e in record.Evaluations)
            {
                html.Raw("<tr>").Cell(e.Model).Cell(e.Task).Cell(e.Metric).Cell(HtmlWriter.Number(e.Value))
                    .Cell(e.Samples.ToString(CultureInfo.InvariantCulture)).Cell(HtmlWriter.Time(e.RecordedAt)).Raw("</tr>");
            }
            html.Raw("</tbody></table></div>");
        }
        html.Raw("</section>");

        // Config
        html.Raw("<section id=\"config\" aria-labelledby=\"cfg-h\"><h2 id=\"cfg-h\">Config as submitted</h2>");
        if (record.ConfigPath is not null)
        {
            html.Raw("<p class=\"mono\">").Text(record.ConfigPath).Raw("</p>");
        }
        html.Raw("<pre class=\"config\">").Text(record.ConfigText).Raw("</pre>");
        if (!string.IsNullOrWhiteSpace(record.ResolvedConfig))
        {
            html.Raw("<details><summary>As resolved</summary><pre class=\"config\">").Text(record.ResolvedConfig).Raw("</pre></details>");
        }
        html.Raw("</section>");

        // Status and timings
        html.Raw("<section id=\"status\" aria-labelledby=\"st-h\"><h2 id=\"st-h\">Status and timings</h2><dl class=\"facts\">");
        Fact(html, "status", record.Status.ToString().ToLowerInvariant());
        Fact(html, "created", HtmlWriter.Time(record.CreatedAt));
        Fact(html, "started", HtmlWriter.Time(record.StartedAt));
        Fact(html, "finished", record.FinishedAt is { } f ? HtmlWriter.Time(f) : null);
        foreach (var (phase, seconds) in record.Durations)
        {
            Fact(html, phase, seconds.ToString("0.000", CultureInfo.InvariantCulture) + " s");
        }
        html.Raw("</dl>");
        if (record.Warnings.Count > 0)
        {
            html.Raw("<h3>").Text($"Warnings ({record.Warnings.Count})").Raw("</h3><ul>");
            foreach (var w in record.Warnings)
            {
                html.Raw("<li><span class=\"mono\">").Text(w.Kind).Raw("</span> ").Text(w.Message).Raw("</li>");
            }
            html.Raw("</ul>");
        }
        html.Raw("</section>");

        // Lineage: the graph, and the same as lists (its text alternative).
        html.Raw("<section id=\"lineage\" aria-labelledby=\"lin-h\"><h2 id=\"lin-h\">Lineage</h2>");
        if (graph.Nodes.Count > 1 || graph.Cuts.Count > 0)
        {
            LineageGraphSvg.Write(html, "lineage-graph", graph, LineageLayout.Of(graph));
        }
        html.Raw("<div class=\"lineage\"><div><h3>Made from</h3><ul class=\"tree\" id=\"ancestry\"><li><strong class=\"mono\">").Text(record.Id).Raw("</strong> ")
            .Text(summary.Method).Raw("<ul>");
        var shown = new HashSet<string>(StringComparer.Ordinal) { record.Id };
        foreach (var input in record.Inputs)
        {
            html.Raw("<li><span class=\"mono\">").Text(input.Reference).Raw("</span>");
            if (input.ResolvedCommit is not null)
            {
                html.Raw(" <span class=\"muted mono\">@").Text(input.ResolvedCommit[..Math.Min(12, input.ResolvedCommit.Length)]).Raw("</span>");
            }
            AncestorList(html, lineage, lineage.ProducersOf(record.Id, input.Reference), shown);
            html.Raw("</li>");
        }
        UnattributedAncestors(html, lineage, record.Id, record.Inputs.Select(i => i.Reference), shown);
        html.Raw("</ul></li></ul>");
        CutNotes(html, graph.Cuts.Where(c => c.Generation < 0));
        html.Raw("</div><div><h3>Made from it</h3>");
        var children = lineage.ConsumersOf(record.Id);
        if (children.Count == 0)
        {
            html.Raw("<p class=\"empty\" id=\"descendants\">No recorded merge used this model.</p>");
        }
        else
        {
            html.Raw("<ul class=\"tree\" id=\"descendants\">");
            DescendantItems(html, lineage, children, [record.Id]);
            html.Raw("</ul>");
        }
        CutNotes(html, graph.Cuts.Where(c => c.Generation > 0));
        html.Raw("</div></div></section></article>");
        Layout.End(html);
        return new PageResult(StatusCodes.Status200OK, html.ToString());
    }

    /// <summary>A nested list of the merges that produced an input, each with its own inputs and their producers (each merge expanded once).</summary>
    private static void AncestorList(HtmlWriter html, LineageView lineage, IReadOnlyList<MergeSummary> producers, HashSet<string> shown)
    {
        if (producers.Count == 0)
        {
            return;
        }
        html.Raw("<ul>");
        foreach (var p in producers)
        {
            html.Raw("<li>").Link("/merges/" + HtmlWriter.Url(p.Id), p.Id, "lineage-link mono").Raw(" ").Text(p.Method).Raw(" ");
            Status(html, p.Status);
            if (shown.Add(p.Id))
            {
                html.Raw("<ul>");
                foreach (var reference in p.Inputs)
                {
                    html.Raw("<li><span class=\"mono\">").Text(reference).Raw("</span>");
                    AncestorList(html, lineage, lineage.ProducersOf(p.Id, reference), shown);
                    html.Raw("</li>");
                }
                UnattributedAncestors(html, lineage, p.Id, p.Inputs, shown);
                html.Raw("</ul>");
            }
            html.Raw("</li>");
        }
        html.Raw("</ul>");
    }

    /// <summary>Producers matched through an input's resolved path or commit rather than its reference as written.</summary>
    private static void UnattributedAncestors(HtmlWriter html, LineageView lineage, string id, IEnumerable<string> references, HashSet<string> shown)
    {
        var others = lineage.ProducersNotNamedBy(id, references);
        if (others.Count > 0)
        {
            html.Raw("<li><span class=\"muted\">an input by its resolved path or commit</span>");
            AncestorList(html, lineage, others, shown);
            html.Raw("</li>");
        }
    }

    /// <summary>List items for merges made from a model and, nested, what was made from them (each merge expanded once).</summary>
    private static void DescendantItems(HtmlWriter html, LineageView lineage, IReadOnlyList<MergeSummary> consumers, HashSet<string> shown)
    {
        foreach (var m in consumers)
        {
            html.Raw("<li>").Link("/merges/" + HtmlWriter.Url(m.Id), m.Id, "lineage-link mono").Raw(" ").Text(m.Method).Raw(" ");
            Status(html, m.Status);
            var next = lineage.ConsumersOf(m.Id);
            if (shown.Add(m.Id) && next.Count > 0)
            {
                html.Raw("<ul>");
                DescendantItems(html, lineage, next, shown);
                html.Raw("</ul>");
            }
            html.Raw("</li>");
        }
    }

    private static void CutNotes(HtmlWriter html, IEnumerable<LineageGraphCut> cuts)
    {
        foreach (var cut in cuts)
        {
            html.Raw("<p class=\"muted lineage-more\">").Text(LineageGraphSvg.MoreText(cut) + ".").Raw("</p>");
        }
    }

    /// <summary>A lineage graph's edges by merge: who produced a merge's inputs, who used its output.</summary>
    private sealed class LineageView
    {
        private readonly Dictionary<string, MergeSummary> _merges;
        private readonly LineageGraph _graph;

        public LineageView(LineageGraph graph)
        {
            _graph = graph;
            _merges = graph.Nodes.ToDictionary(n => n.Merge.Id, n => n.Merge, StringComparer.Ordinal);
        }

        /// <summary>The merges whose output <paramref name="id"/> took as the input <paramref name="reference"/>, newest first.</summary>
        public IReadOnlyList<MergeSummary> ProducersOf(string id, string reference) =>
            Newest(_graph.Edges.Where(e => e.To == id && string.Equals(e.Input, reference, StringComparison.Ordinal)).Select(e => e.From));

        /// <summary>The merges that produced an input of <paramref name="id"/> that none of <paramref name="references"/> names.</summary>
        public IReadOnlyList<MergeSummary> ProducersNotNamedBy(string id, IEnumerable<string> references)
        {
            var named = references.ToHashSet(StringComparer.Ordinal);
            return Newest(_graph.Edges.Where(e => e.To == id && (e.Input is null || !named.Contains(e.Input))).Select(e => e.From));
        }

        /// <summary>The merges that used <paramref name="id"/>'s output, newest first.</summary>
        public IReadOnlyList<MergeSummary> ConsumersOf(string id) => Newest(_graph.Edges.Where(e => e.From == id).Select(e => e.To));

        private List<MergeSummary> Newest(IEnumerable<string> ids) =>
            [.. ids.Distinct(StringComparer.Ordinal).Select(i => _merges[i]).OrderByDescending(m => m.CreatedAt).ThenByDescending(m => m.Id, StringComparer.Ordinal)];
    }

    private async Task<PageResult> RepositoryAsync(HttpContext context, HubRepositorySnapshot snapshot, CancellationToken ct)
    {
        var html = new HtmlWriter();
        Layout.Begin(html, snapshot.RepoId, string.Empty);
        html.Raw("<article class=\"model\"><header class=\"model-head\"><h1 class=\"mono\">").Text(snapshot.RepoId).Raw("</h1><p>repository from --repos · commit <span class=\"mono\">")
            .Text(snapshot.Commit).Raw("</span> · modified ").Text(HtmlWriter.Time(snapshot.LastModified.UtcDateTime)).Raw("</p></header>");
        html.Raw("<section id=\"card\" aria-labelledby=\"card-h\"><h2 id=\"card-h\">Model card</h2>");
        var readme = snapshot.Files.FirstOrDefault(f => string.Equals(f.Path, "README.md", StringComparison.OrdinalIgnoreCase));
        if (readme is not null && RepositoryFileResolver.IsUnchangedRealFile(readme.PhysicalPath))
        {
            html.Raw("<div class=\"card-body\">").Raw(ModelCardRenderer.Render(await File.ReadAllTextAsync(readme.PhysicalPath, ct))).Raw("</div>");
        }
        else
        {
            html.Raw("<p class=\"empty\">No model card.</p>");
        }
        html.Raw("</section><section id=\"files\" aria-labelledby=\"files-h\"><h2 id=\"files-h\">Files and versions</h2>");
        FileTable(html, snapshot.Files.Select(f => (f.Path, f.Size, f.Sha256)), snapshot.Access.Private || snapshot.Access.Gated ? null : snapshot.RepoId, snapshot.Commit);
        html.Raw("</section><section id=\"use\" aria-labelledby=\"use-h\"><h2 id=\"use-h\">Use this model</h2>");
        PullCommands(html, Endpoint(context), snapshot.RepoId);
        html.Raw("</section><section id=\"lineage\" aria-labelledby=\"lin-h\"><h2 id=\"lin-h\">Lineage</h2><h3>Merges that used it</h3>");
        // Merges name a repository by its id (pulled through a Hub) or by its folder (read in place): ask for both, each
        // a page of the indexed `--model` list (not the full lineage, which reads every merge that used it).
        // (`--model` also matches the merges that wrote this repository: a few more are asked for, then those left out.)
        const int asked = LineageListLimit + 4;
        var usedBy = (await _registry.ListAsync(new MergeQuery { Model = snapshot.RepoId, Limit = asked }, ct)).ToList();
        var folder = FolderOf(snapshot);
        if (folder is not null)
        {
            var known = usedBy.Select(m => m.Id).ToHashSet(StringComparer.Ordinal);
            usedBy.AddRange((await _registry.ListAsync(new MergeQuery { Model = folder, Limit = asked }, ct)).Where(m => known.Add(m.Id)));
        }
        usedBy.RemoveAll(m => string.Equals(m.OutputRepoId, snapshot.RepoId, StringComparison.OrdinalIgnoreCase)
            || (folder is not null && m.OutputFolder is { } o && string.Equals(Path.TrimEndingDirectorySeparator(o), Path.TrimEndingDirectorySeparator(folder), StringComparison.Ordinal)));
        usedBy.Sort((a, b) => b.CreatedAt.CompareTo(a.CreatedAt));
        if (usedBy.Count == 0)
        {
            html.Raw("<p class=\"empty\">No recorded merge used this repository.</p>");
        }
        else
        {
            html.Raw("<ul class=\"tree\" id=\"descendants\">");
            foreach (var m in usedBy.Take(LineageListLimit))
            {
                html.Raw("<li>").Link("/merges/" + HtmlWriter.Url(m.Id), m.Id, "lineage-link mono").Raw(" ").Text(m.Method).Raw(" ");
                Status(html, m.Status);
                html.Raw("</li>");
            }
            html.Raw("</ul>");
            if (usedBy.Count > LineageListLimit)
            {
                html.Raw("<p>").Link("/?model=" + HtmlWriter.Url(snapshot.RepoId), $"All merges that used it (more than {LineageListLimit})").Raw("</p>");
            }
        }
        html.Raw("</section></article>");
        Layout.End(html);
        return new PageResult(StatusCodes.Status200OK, html.ToString());
    }

    /// <summary>The repository's folder on disk (a file's real path less its path in the repository), when it has a file.</summary>
    private static string? FolderOf(HubRepositorySnapshot snapshot)
    {
        var file = snapshot.Files.FirstOrDefault(f => f.PhysicalPath.Replace('\\', '/').EndsWith("/" + f.Path, StringComparison.Ordinal));
        return file is null ? null : file.PhysicalPath[..^(file.Path.Length + 1)];
    }

    /// <summary>Files with sizes and SHA-256, each linked to its Hub resolve URL when <paramref name="repoId"/> is served.</summary>
    private static void FileTable(HtmlWriter html, IEnumerable<(string Path, long Size, string? Sha256)> files, string? repoId, string revision)
    {
        html.Raw("<div class=\"table-wrap\"><table id=\"file-table\"><thead><tr><th scope=\"col\">file</th><th scope=\"col\">size</th><th scope=\"col\">SHA-256</th></tr></thead><tbody>");
        foreach (var (path, size, sha) in files.OrderBy(f => f.Path, StringComparer.Ordinal))
        {
            html.Raw("<tr><td class=\"mono\">");
            if (repoId is not null)
            {
                html.Raw("<a class=\"download\"").Attr("href", "/" + HtmlWriter.UrlPath(repoId) + "/resolve/" + HtmlWriter.Url(revision) + "/" + HtmlWriter.UrlPath(path))
                    .Attr("data-sha256", sha).Raw(" download>").Text(path).Raw("</a>");
            }
            else
            {
                html.Text(path);
            }
            html.Raw("</td><td class=\"nowrap\"").Attr("data-bytes", size.ToString(CultureInfo.InvariantCulture)).Raw(">").Text(HtmlWriter.Bytes(size))
                .Raw("</td><td class=\"mono hash\">").Text(sha ?? "(git blob; not hashed)").Raw("</td></tr>");
        }
        html.Raw("</tbody></table></div>");
    }

    private static void PullCommands(HtmlWriter html, string endpoint, string repoId)
    {
        html.Raw("<p>With sensmerge (into its Hub cache, pinned to the commit):</p><pre class=\"command\" id=\"pull-sensmerge\">")
            .Text($"HF_ENDPOINT={endpoint} sensmerge hub pull {repoId}").Raw("</pre><p>With the Hugging Face CLI:</p><pre class=\"command\" id=\"pull-hf\">")
            .Text($"HF_ENDPOINT={endpoint} huggingface-cli download {repoId}").Raw("</pre>");
    }

    private static void ParameterTable(HtmlWriter html, string title, IReadOnlyDictionary<string, ParameterValue> map)
    {
        if (map.Count == 0)
        {
            return;
        }
        html.Element("h3", title).Raw("<div class=\"table-wrap\"><table class=\"params\"><tbody>");
        foreach (var (name, value) in map)
        {
            html.Raw("<tr>").Cell(name, "th").Raw("<td class=\"mono\">").Text(value.ToString()).Raw("</td></tr>");
        }
        html.Raw("</tbody></table></div>");
    }

    private static void ScoreTableHtml(HtmlWriter html, ScoreTableRecord table)
    {
        html.Raw("<div class=\"table-wrap\"><table class=\"scores\"").Attr("data-table", table.Scorer).Raw("><caption>").Text($"{table.Scorer} ({table.Kind.ToString().ToLowerInvariant()})")
            .Raw("</caption><thead><tr><th scope=\"col\"></th>");
        foreach (var column in table.Columns)
        {
            html.Raw("<th scope=\"col\"").Attr("title", column).Raw(">").Text(column).Raw("</th>");
        }
        html.Raw("</tr></thead><tbody>");
        for (var r = 0; r < table.Rows.Count; r++)
        {
            html.Raw("<tr>").Raw("<th scope=\"row\">").Text(table.Rows[r]).Raw("</th>");
            for (var c = 0; c < table.Columns.Count; c++)
            {
                var v = table.Values[r][c];
                html.Raw("<td").Attr("title", $"{table.Scorer}: {table.Rows[r]} × {table.Columns[c]} = {v.ToString("R", CultureInfo.InvariantCulture)}").Raw(">")
                    .Text(HtmlWriter.Number(v)).Raw("</td>");
            }
            html.Raw("</tr>");
        }
        html.Raw("</tbody></table></div>");
        if (table.Details.Count > 0)
        {
            html.Raw("<p class=\"muted\">").Text(string.Join(", ", table.Details.Select(d => $"{d.Key}={d.Value.ToString(CultureInfo.InvariantCulture)}"))).Raw("</p>");
        }
    }

    /// <summary>The <c>org/name</c> of a Hub reference (revision dropped), or null for a folder path.</summary>
    private static string? RepoOf(string reference)
    {
        var r = reference.Trim();
        if (r.Length == 0 || r[0] is '/' or '.' or '~' || Path.IsPathRooted(r))
        {
            return null;
        }
        var at = r.IndexOf('@', StringComparison.Ordinal);
        var repo = at >= 0 ? r[..at] : r;
        return repo.Count(ch => ch == '/') == 1 ? repo : null;
    }
}
