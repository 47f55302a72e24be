using System.Text.RegularExpressions;

namespace SensMerging.Core.Config;

/// <summary>
/// A model named in a config: a local folder (absolute, or relative to the config file's folder) or a Hub repository
/// <c>org/name</c> with an optional <c>@revision</c>. A relative name that exists as a folder is local, even when it
/// looks like <c>org/name</c>. <c>model+adapter</c> (mergekit's LoRA syntax; each side a folder or a Hub reference) is the
/// model with a PEFT LoRA adapter applied: the record describes the model, <see cref="Lora"/> the adapter.
/// </summary>
/// <param name="Text">The reference as written.</param>
/// <param name="Repo">The Hub repository id, or null for a local folder.</param>
/// <param name="Revision">The Hub revision (branch, tag or commit), or null for the default branch.</param>
/// <param name="LocalPath">The full path of a local folder, or null for a Hub reference.</param>
public sealed partial record ModelReference(string Text, string? Repo, string? Revision, string? LocalPath)
{
    public bool IsLocal => LocalPath is not null;

    /// <summary>The LoRA adapter applied to the model (<c>model+adapter</c>), or null.</summary>
    public ModelReference? Lora { get; init; }

    /// <summary>The model without its adapter (the text before the <c>+</c>); this reference when it has none.</summary>
    public ModelReference WithoutLora() =>
        Lora is null ? this : this with { Text = Text[..Text.IndexOf('+', StringComparison.Ordinal)].Trim(), Lora = null };

    /// <summary>Parses <paramref name="text"/>; relative paths resolve against <paramref name="baseDirectory"/>.</summary>
    public static ModelReference Parse(string text, string baseDirectory)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(baseDirectory);
        var trimmed = text.Trim();
        if (trimmed.Length == 0)
        {
            throw new FormatException("a model reference is empty");
        }
        if (trimmed.Contains('+', StringComparison.Ordinal)
            && !Directory.Exists(LooksLikePath(trimmed) ? FullPath(trimmed, baseDirectory) : Path.GetFullPath(Path.Combine(baseDirectory, trimmed))))
        {
            var parts = trimmed.Split('+');
            if (parts.Length != 2 || parts.Any(p => p.Trim().Length == 0))
            {
                throw new FormatException($"model reference '{trimmed}': a LoRA reference is 'model+adapter', with one '+' between a model and an adapter");
            }
            var model = Parse(parts[0], baseDirectory);
            return model with { Text = trimmed, Lora = Parse(parts[1], baseDirectory) };
        }
        if (LooksLikePath(trimmed))
        {
            return new ModelReference(trimmed, null, null, FullPath(trimmed, baseDirectory));
        }
        var relative = Path.GetFullPath(Path.Combine(baseDirectory, trimmed));
        if (Directory.Exists(relative))
        {
            return new ModelReference(trimmed, null, null, relative);
        }
        var hub = HubPattern().Match(trimmed);
        if (hub.Success)
        {
            var revision = hub.Groups["rev"].Success ? hub.Groups["rev"].Value : null;
            return new ModelReference(trimmed, hub.Groups["repo"].Value, revision, null);
        }
        if (trimmed.Contains('@', StringComparison.Ordinal))
        {
            throw new FormatException($"model reference '{trimmed}' is neither a local folder nor a Hub repository 'org/name@revision'");
        }
        return new ModelReference(trimmed, null, null, relative);
    }

    /// <summary>True when both references name the same model (same folder, or same repository and revision).</summary>
    public bool SameModelAs(ModelReference? other)
    {
        if (other is null || (Lora is null) != (other.Lora is null) || (Lora is not null && !Lora.SameModelAs(other.Lora)))
        {
            return false;
        }
        if (IsLocal || other.IsLocal)
        {
            return IsLocal && other.IsLocal && string.Equals(
                Path.TrimEndingDirectorySeparator(LocalPath!), Path.TrimEndingDirectorySeparator(other.LocalPath!), StringComparison.Ordinal);
        }
        return string.Equals(Repo, other.Repo, StringComparison.OrdinalIgnoreCase)
            && string.Equals(Revision ?? "main", other.Revision ?? "main", StringComparison.Ordinal);
    }

    public override string ToString() => Text;

    private static bool LooksLikePath(string text) =>
        Path.IsPathRooted(text) || text.StartsWith("./", StringComparison.Ordinal) || text.StartsWith("../", StringComparison.Ordinal)
        || text.StartsWith("~/", StringComparison.Ordinal) || text is "." or "..";

    private static string FullPath(string text, string baseDirectory)
    {
        if (text.StartsWith("~/", StringComparison.Ordinal))
        {
            text = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), text[2..]);
        }
        return Path.GetFullPath(Path.Combine(baseDirectory, text));
    }

    [GeneratedRegex(@"^(?<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(@(?<rev>[A-Za-z0-9][A-Za-z0-9._/-]*))?$")]
    private static partial Regex HubPattern();
}

/// <summary>A model reference made concrete: a local folder in the Hugging Face layout and the commit it was taken at.</summary>
/// <param name="Reference">The reference as configured.</param>
/// <param name="LocalPath">The folder holding config.json and the weights.</param>
/// <param name="Commit">The resolved commit for Hub references; null for local folders.</param>
public sealed record ResolvedModel(ModelReference Reference, string LocalPath, string? Commit)
{
    /// <summary>The resolved LoRA adapter of a <c>model+adapter</c> reference (its folder holds adapter_config.json), or null.</summary>
    public ResolvedModel? Adapter { get; init; }
}

/// <summary>Turns model references into local folders (the Hub client implements Hub references).</summary>
public interface IModelReferenceResolver
{
    Task<ResolvedModel> ResolveAsync(ModelReference reference, CancellationToken cancellationToken);
}

/// <summary>Resolves local folders only; a Hub reference is a clear error until a Hub-aware resolver is configured.</summary>
public sealed class LocalModelReferenceResolver : IModelReferenceResolver
{
    public Task<ResolvedModel> ResolveAsync(ModelReference reference, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reference);
        cancellationToken.ThrowIfCancellationRequested();
        if (reference.Lora is { } lora)
        {
            var model = ResolveFolder(reference.WithoutLora());
            var adapter = lora.IsLocal ? ResolveLocalAdapter(lora) : ResolveFolder(lora);
            return Task.FromResult(model with { Reference = reference, Adapter = adapter });
        }
        return Task.FromResult(ResolveFolder(reference));
    }

    /// <summary>A local LoRA adapter folder: it must exist and hold <c>adapter_config.json</c>.</summary>
    public static ResolvedModel ResolveLocalAdapter(ModelReference adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        if (!adapter.IsLocal)
        {
            throw new ArgumentException($"'{adapter.Text}' is not a local folder", nameof(adapter));
        }
        if (!Directory.Exists(adapter.LocalPath))
        {
            throw new DirectoryNotFoundException($"LoRA adapter '{adapter.Text}': folder '{adapter.LocalPath}' does not exist");
        }
        if (!File.Exists(Path.Combine(adapter.LocalPath!, "adapter_config.json")))
        {
            throw new FileNotFoundException($"LoRA adapter '{adapter.Text}': folder '{adapter.LocalPath}' has no adapter_config.json (not a PEFT adapter)");
        }
        return new ResolvedModel(adapter, adapter.LocalPath!, null);
    }

    private static ResolvedModel ResolveFolder(ModelReference reference)
    {
        if (!reference.IsLocal)
        {
            throw new NotSupportedException(
                $"model '{reference.Text}' is a Hub reference ({reference.Repo}{(reference.Revision is null ? string.Empty : "@" + reference.Revision)}); "
                + "only local folders can be resolved without the Hub client");
        }
        if (!Directory.Exists(reference.LocalPath))
        {
            throw new DirectoryNotFoundException($"model '{reference.Text}': folder '{reference.LocalPath}' does not exist");
        }
        if (!File.Exists(Path.Combine(reference.LocalPath!, "config.json")))
        {
            throw new FileNotFoundException($"model '{reference.Text}': folder '{reference.LocalPath}' has no config.json (not a Hugging Face model folder)");
        }
        return new ResolvedModel(reference, reference.LocalPath!, null);
    }
}
