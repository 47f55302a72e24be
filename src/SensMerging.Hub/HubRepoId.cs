namespace SensMerging.Hub;

/// <summary>A model repository id on the Hub: "org/name" (or a legacy "name" without an org).</summary>
public sealed record HubRepoId
{
    private HubRepoId(string? org, string name)
    {
        Org = org;
        Name = name;
    }

    /// <summary>The owner (user or organisation); null for legacy ids without an owner.</summary>
    public string? Org { get; }

    /// <summary>The repository name.</summary>
    public string Name { get; }

    /// <summary>"org/name" as the Hub writes it.</summary>
    public string Id => Org is null ? Name : $"{Org}/{Name}";

    /// <summary>The folder name of the repository in the shared cache: models--{org}--{name}.</summary>
    public string CacheFolderName => Org is null ? $"models--{Name}" : $"models--{Org}--{Name}";

    /// <summary>Parses "org/name"; throws <see cref="ArgumentException"/> naming the problem.</summary>
    public static HubRepoId Parse(string repoId)
    {
        ArgumentNullException.ThrowIfNull(repoId);
        var parts = repoId.Split('/');
        if (parts.Length is < 1 or > 2)
        {
            throw new ArgumentException($"Repository id '{repoId}' is not of the form 'org/name'.", nameof(repoId));
        }

        foreach (var part in parts)
        {
            ValidatePart(repoId, part);
        }

        return parts.Length == 2 ? new HubRepoId(parts[0], parts[1]) : new HubRepoId(null, parts[0]);
    }

    /// <summary>Parses without throwing.</summary>
    public static bool TryParse(string? repoId, out HubRepoId? result)
    {
        result = null;
        if (repoId is null)
        {
            return false;
        }

        try
        {
            result = Parse(repoId);
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <inheritdoc />
    public override string ToString() => Id;

    private static void ValidatePart(string repoId, string part)
    {
        if (part.Length is 0 or > 96)
        {
            throw new ArgumentException($"Repository id '{repoId}' has an empty or too long part.", nameof(repoId));
        }

        if (part.Contains("--", StringComparison.Ordinal) || part.Contains("..", StringComparison.Ordinal)
            || part[0] is '-' or '.' || part[^1] is '-' or '.')
        {
            throw new ArgumentException(
                $"Repository id '{repoId}': '{part}' must not contain '--' or '..' nor start or end with '-' or '.'.", nameof(repoId));
        }

        foreach (var c in part)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            {
                throw new ArgumentException(
                    $"Repository id '{repoId}' contains the character '{c}'; only letters, digits, '-', '_' and '.' are allowed.", nameof(repoId));
            }
        }
    }
}
