using System.Globalization;
using System.Text;

namespace SensMerging.Registry;

/// <summary>Plain-text renderings of registry data for the CLI (aligned columns, no terminal codes).</summary>
public static class RegistryText
{
    /// <summary><c>registry list</c>: one aligned row per merge, newest first.</summary>
    public static string List(IReadOnlyList<MergeSummary> merges)
    {
        ArgumentNullException.ThrowIfNull(merges);
        if (merges.Count == 0)
        {
            return "no merges recorded" + Environment.NewLine;
        }
        string[] header = ["ID", "STATUS", "CREATED (UTC)", "METHOD", "INPUTS", "OUTPUT", "SECONDS"];
        var rows = merges.Select(m => new[]
        {
            m.Id,
            Status(m.Status),
            m.CreatedAt.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
            m.Method,
            Cut(string.Join(", ", m.Inputs), 60),
            Cut(m.OutputRepoId ?? m.OutputFolder ?? (m.Error is null ? "-" : "error: " + m.Error), 50),
            m.TotalSeconds?.ToString("0.0", CultureInfo.InvariantCulture) ?? "-",
        }).ToList();
        return Table(header, rows);
    }

    /// <summary><c>registry show</c>: every section of a record.</summary>
    public static string Show(MergeRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"Merge {record.Id}  [{Status(record.Status)}]  {MergeSummary.MethodName(record)}").AppendLine();
        Line(sb, "created", Time(record.CreatedAt));
        Line(sb, "started", Time(record.StartedAt));
        Line(sb, "finished", record.FinishedAt is { } f ? Time(f) : "-");
        Line(sb, "host version", record.HostVersion);
        if (record.Owner is { } o)
        {
            Line(sb, "process", $"pid {o.ProcessId} on {o.MachineName} (started {Time(o.ProcessStartedAt)})");
        }
        if (record.Error is { } e)
        {
            Line(sb, "error", $"{e.Type}: {e.Message}".ReplaceLineEndings(Environment.NewLine + new string(' ', 15)));
        }
        Line(sb, "seed", record.Seed?.ToString(CultureInfo.InvariantCulture) ?? "-");
        if (record.Dtype is not null)
        {
            Line(sb, "dtype", record.Dtype);
        }
        if (record.OutDtype is not null)
        {
            Line(sb, "out dtype", record.OutDtype);
        }
        if (record.ComputeDtype is not null)
        {
            Line(sb, "compute dtype", record.ComputeDtype);
        }
        if (record.Tags.Count > 0)
        {
            Line(sb, "tags", string.Join(", ", record.Tags));
        }
        if (record.Warnings.Count > 0)
        {
            Heading(sb, $"Warnings ({record.Warnings.Count})");
            foreach (var w in record.Warnings)
            {
                sb.Append(CultureInfo.InvariantCulture, $"  {w.Kind}: {w.Message}").AppendLine();
            }
        }

        Heading(sb, "Plugins");
        if (record.Strategy is { } s)
        {
            sb.Append("  strategy   ").AppendLine(Plugin(s));
        }
        foreach (var d in record.Decorators)
        {
            sb.Append("  decorator  ").Append(Plugin(d.Plugin));
            if (d.Parameters.Count > 0)
            {
                sb.Append("  ").Append(Map(d.Parameters));
            }
            sb.AppendLine();
        }
        foreach (var sc in record.Scorers)
        {
            sb.Append("  scorer     ").AppendLine(Plugin(sc));
        }

        Heading(sb, "Inputs");
        foreach (var i in record.Inputs)
        {
            sb.Append(CultureInfo.InvariantCulture, $"  {i.Name} ({i.Role.ToString().ToLowerInvariant()}): {i.Reference}").AppendLine();
            if (i.RequestedRevision is not null || i.ResolvedCommit is not null)
            {
                sb.Append(CultureInfo.InvariantCulture, $"    revision {i.RequestedRevision ?? "-"} -> commit {i.ResolvedCommit ?? "-"}").AppendLine();
            }
            if (i.LocalPath is not null)
            {
                sb.Append("    path ").AppendLine(i.LocalPath);
            }
            foreach (var file in i.Files)
            {
                sb.Append(CultureInfo.InvariantCulture, $"    {file.Sha256}  {file.Size,14:N0}  {file.Path}").AppendLine();
            }
        }

        if (record.Parameters.Count > 0 || record.ModelParameters.Count > 0)
        {
            Heading(sb, "Parameters");
            if (record.Parameters.Count > 0)
            {
                sb.Append("  global: ").AppendLine(Map(record.Parameters));
            }
            foreach (var (model, p) in record.ModelParameters)
            {
                sb.Append(CultureInfo.InvariantCulture, $"  {model}: {Map(p)}").AppendLine();
            }
        }
        if (record.DecoratorSettings.Count > 0)
        {
            Heading(sb, "Decorator settings");
            foreach (var (name, p) in record.DecoratorSettings)
            {
                sb.Append(CultureInfo.InvariantCulture, $"  {name}: {Map(p)}").AppendLine();
            }
        }
        foreach (var t in record.ScoreTables)
        {
            Heading(sb, $"Scores: {t.Scorer} ({t.Kind})");
            sb.Append(ScoreTable(t.Rows, t.Columns, t.Values));
        }
        if (record.Coefficients is { } c)
        {
            Heading(sb, $"Coefficients ({c.Decorator}; layer groups x experts)");
            sb.Append(Transposed(c.Experts, c.LayerGroups, c.Values));
            // Records written before each table was stored once repeat the score tables here: show each once.
            foreach (var t in c.Tables.Where(t => !record.ScoreTables.Any(t.SameNumbers)))
            {
                Heading(sb, $"{t.Scorer} ({t.Kind})");
                sb.Append(ScoreTable(t.Rows, t.Columns, t.Values));
            }
        }

        Heading(sb, "Outputs");
        if (record.Outputs is { } outp)
        {
            Line(sb, "folder", outp.Folder);
            if (outp.RepoId is not null)
            {
                Line(sb, "repo", outp.RepoId);
            }
            Line(sb, "size", $"{outp.TotalBytes:N0} bytes in {outp.Files.Count} files, {outp.TensorCount} tensors");
            foreach (var file in outp.Files)
            {
                sb.Append(CultureInfo.InvariantCulture, $"    {file.Sha256}  {file.Size,14:N0}  {file.Path}").AppendLine();
            }
        }
        else
        {
            sb.AppendLine("  none");
        }
        if (record.Publications.Count > 0)
        {
            Heading(sb, "Published");
            foreach (var p in record.Publications)
            {
                sb.Append(CultureInfo.InvariantCulture, $"  {p.Endpoint}/{p.RepoId}@{p.Branch} -> {p.Commit}  ({Time(p.PublishedAt)})").AppendLine();
            }
        }
        if (record.Evaluations.Count > 0)
        {
            Heading(sb, "Evaluations");
            sb.Append(Table(["MODEL", "TASK", "METRIC", "VALUE", "SAMPLES", "RECORDED"],
                [.. record.Evaluations.Select(ev => new[]
                {
                    ev.Model, ev.Task, ev.Metric, ev.Value.ToString("0.####", CultureInfo.InvariantCulture),
                    ev.Samples.ToString(CultureInfo.InvariantCulture), Time(ev.RecordedAt),
                })], indent: "  "));
        }
        if (record.Durations.Count > 0)
        {
            Heading(sb, "Durations (s)");
            sb.Append("  ").AppendLine(string.Join("  ", record.Durations.Select(kv => $"{kv.Key} {kv.Value.ToString("0.###", CultureInfo.InvariantCulture)}")));
        }
        Heading(sb, "Config");
        if (record.ConfigPath is not null)
        {
            Line(sb, "file", record.ConfigPath);
        }
        foreach (var line in record.ConfigText.Split('\n'))
        {
            sb.Append("  | ").AppendLine(line.TrimEnd('\r'));
        }
        return sb.ToString();
    }

    /// <summary><c>registry lineage</c>: producers (with their ancestry as a tree) and consumers.</summary>
    public static string Lineage(ModelLineage lineage)
    {
        ArgumentNullException.ThrowIfNull(lineage);
        var sb = new StringBuilder();
        sb.Append("Model ").AppendLine(lineage.Reference);
        sb.AppendLine(lineage.ProducedBy.Count == 0 ? "  produced by: no recorded merge" : "  produced by:");
        foreach (var node in lineage.Ancestry)
        {
            Tree(sb, node, "    ");
        }
        sb.AppendLine(lineage.UsedBy.Count == 0 ? "  used by: no recorded merge" : "  used by:");
        foreach (var m in lineage.UsedBy)
        {
            sb.Append(CultureInfo.InvariantCulture, $"    {m.Id}  {Status(m.Status)}  {m.Method} -> {m.OutputRepoId ?? m.OutputFolder ?? "-"}").AppendLine();
        }
        return sb.ToString();
    }

    private static void Tree(StringBuilder sb, LineageNode node, string indent)
    {
        sb.Append(CultureInfo.InvariantCulture, $"{indent}{node.Merge.Id}  {Status(node.Merge.Status)}  {node.Merge.Method}  {Time(node.Merge.CreatedAt)}").AppendLine();
        foreach (var input in node.Inputs)
        {
            sb.Append(CultureInfo.InvariantCulture, $"{indent}  <- {input.Reference}{(input.ResolvedCommit is null ? string.Empty : " @ " + input.ResolvedCommit[..Math.Min(12, input.ResolvedCommit.Length)])}").AppendLine();
            foreach (var p in input.ProducedBy)
            {
                Tree(sb, p, indent + "       ");
            }
        }
    }

    /// <summary>A rows x columns table of numbers (rows: experts or models; columns: groups or tasks).</summary>
    public static string ScoreTable(IReadOnlyList<string> rows, IReadOnlyList<string> columns, IReadOnlyList<double[]> values)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(columns);
        ArgumentNullException.ThrowIfNull(values);
        string[] header = [string.Empty, .. columns];
        var body = rows.Select((r, i) => (string[])[r, .. values[i].Select(Num)]).ToList();
        return Table(header, body, indent: "  ");
    }

    /// <summary>Coefficient-style table with layer groups as rows and experts as columns.</summary>
    public static string Transposed(IReadOnlyList<string> experts, IReadOnlyList<string> groups, IReadOnlyList<double[]> values)
    {
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(groups);
        ArgumentNullException.ThrowIfNull(values);
        string[] header = ["layer group", .. experts];
        var body = groups.Select((g, j) => (string[])[g, .. experts.Select((_, e) => Num(values[e][j]))]).ToList();
        return Table(header, body, indent: "  ");
    }

    /// <summary>Left-aligned text columns separated by two spaces.</summary>
    public static string Table(IReadOnlyList<string> header, IReadOnlyList<string[]> rows, string indent = "")
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(rows);
        // A cell never breaks its row: a multi-line value (an error message) is shown on one line, line breaks escaped.
        header = [.. header.Select(OneLine)];
        rows = [.. rows.Select(r => r.Select(OneLine).ToArray())];
        var widths = header.Select((h, c) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => c < r.Length ? r[c].Length : 0))).ToArray();
        var sb = new StringBuilder();
        void Row(IReadOnlyList<string> cells)
        {
            sb.Append(indent);
            for (var c = 0; c < widths.Length; c++)
            {
                var cell = c < cells.Count ? cells[c] : string.Empty;
                sb.Append(c == widths.Length - 1 ? cell : cell.PadRight(widths[c] + 2));
            }
            sb.Append('\n');
        }
        Row(header);
        foreach (var r in rows)
        {
            Row(r);
        }
        return sb.ToString();
    }

    private static string Num(double v) => double.IsFinite(v) ? v.ToString("0.0000", CultureInfo.InvariantCulture) : ParameterValue.FormatDouble(v);

    private static string Plugin(PluginRef p) =>
        $"{p.Component}  ({p.PluginId} {p.Version}, contract {p.ContractVersion}, sha256 {p.AssemblySha256[..Math.Min(12, p.AssemblySha256.Length)]})";

    private static string Map(IReadOnlyDictionary<string, ParameterValue> map) =>
        string.Join(", ", map.Select(kv => kv.Key + "=" + kv.Value));

    private static string Status(MergeStatus s) => s.ToString().ToLowerInvariant();

    private static string Time(DateTime t) => t.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>
    /// <paramref name="text"/> on one line: each line break becomes the two characters <c>\n</c> and any other control
    /// character a space, so a table row stays one row (<c>show</c> prints such text whole).
    /// </summary>
    public static string OneLine(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var line = text.ReplaceLineEndings("\\n");
        return line.Any(char.IsControl) ? string.Concat(line.Select(c => char.IsControl(c) ? ' ' : c)) : line;
    }

    private static string Cut(string s, int max) => s.Length <= max ? s : s[..(max - 3)] + "...";

    private static void Line(StringBuilder sb, string label, string value) =>
        sb.Append("  ").Append(label.PadRight(13)).AppendLine(value);

    private static void Heading(StringBuilder sb, string title) => sb.AppendLine().AppendLine(title);
}
