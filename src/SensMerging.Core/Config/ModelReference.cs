using System.Text.RegularExpressions;

namespace SensMerging.Core.Config;

/// <summary>
/// A model named in a config: a local folder (absolute, or relative to the config file's folder) or a Hub repository
/// <c>org/name</c> with an optional <c>@revision</c>. A relative name that exists as a folder is local, even when it
/// looks like <c>org/name</c>.
/// </summary>
/// <param name="Text">The reference as written.</param>
/// <param name="Repo">The Hub repository id, or null for a local folder.</param>
/// <param name="Revision">The Hub revision (branch, tag or commit), or null for the default branch.</param>
/// <param name="LocalPath">The full path of a local folder, or null for a Hub reference.</param>
public sealed partial record ModelReference(string Text, string? Repo, string? Revision, string? LocalPath)
{
    public bool IsLocal => LocalPath is not null;

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
        if (trimmed.Contains('+', StringComparison.Ordinal) && !LooksLikePath(trimmed))
        {
            throw new FormatException($"model reference '{trimmed}': LoRA references (model+adapter) are not supported");
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
        if (other is null)
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
public sealed record ResolvedModel(ModelReference Reference, string LocalPath, string? Commit);

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
        return Task.FromResult(new ResolvedModel(reference, reference.LocalPath!, null));
    }
}
