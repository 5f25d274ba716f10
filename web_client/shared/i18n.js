/**
 * The interface's text, in French (the only language of the service), and
 * date formatting in Europe/Paris.
 */

const STRINGS = {
  sysArchived: "Accompagnement clôturé ({reason}) : la conversation est en lecture seule.",
  sysRestored: "La conversation a été rouverte par un superviseur.",
  sysInactivityNotice: "Sans connexion de votre part, ce compte et ses messages seront supprimés le {date}. Connectez-vous pour le conserver.",
  appName: "CEJ Messagerie",
  consoleTitle: "Console conseiller",
  appTitle: "Ma messagerie",
  skipToThread: "Aller à la conversation",
  login: "Identifiant",
  password: "Mot de passe",
  passwordConfirm: "Confirmer le mot de passe",
  passwordHint: "Au moins 10 caractères.",
  passwordsDiffer: "Les deux mots de passe ne sont pas identiques.",
  signIn: "Se connecter",
  signOut: "Se déconnecter",
  signingIn: "Connexion…",
  loginTitle: "Connexion",
  loginFailed: "Identifiant ou mot de passe incorrect.",
  tooManyAttempts: "Trop de tentatives. Réessayez dans quelques minutes.",
  networkError: "Le serveur ne répond pas. Vérifiez votre connexion.",
  genericError: "Une erreur est survenue : {message}",
  sessionExpired: "Votre session a expiré. Reconnectez-vous.",
  activationTitle: "Activer mon compte",
  activationIntro: "Saisissez le code d'activation donné par votre conseiller, puis choisissez un mot de passe.",
  activationCode: "Code d'activation",
  activate: "Activer",
  activationFailed: "Ce code d'activation est inconnu, déjà utilisé ou expiré.",
  haveCode: "J'ai un code d'activation",
  haveAccount: "J'ai déjà un compte",
  online: "En ligne",
  offline: "Hors ligne",
  connecting: "Connexion en cours…",
  reconnecting: "Reconnexion…",
  connectionLabel: "État de la connexion",
  lastSeen: "Vu {when}",
  neverSeen: "Pas encore connecté",
  conversations: "Conversations",
  searchLabel: "Rechercher un bénéficiaire",
  searchPlaceholder: "Nom du bénéficiaire",
  noConversation: "Aucune conversation.",
  noMatch: "Aucun bénéficiaire ne correspond.",
  unreadCount: "{n} non lu(s)",
  flagged: "Prioritaire",
  flag: "Marquer prioritaire",
  unflag: "Retirer la priorité",
  selectConversation: "Choisissez une conversation dans la liste.",
  loadOlder: "Charger les messages précédents",
  loading: "Chargement…",
  messageLabel: "Votre message",
  messagePlaceholder: "Écrire un message…",
  send: "Envoyer",
  typing: "{name} est en train d'écrire…",
  statusPending: "En attente",
  statusSending: "Envoi…",
  statusSent: "Envoyé",
  statusRead: "Lu",
  statusFailed: "Échec de l'envoi",
  retry: "Réessayer",
  discard: "Supprimer",
  you: "Vous",
  messagesOf: "Messages avec {name}",
  unreadableMessage: "Message illisible sur cet appareil (clé manquante).",
  unverifiedMessage: "Message non vérifié : signature invalide ou appareil inconnu.",
  unverifiableMessage: "Message non vérifiable : l'appareil qui l'a envoyé n'appartient pas à son expéditeur.",
  waitingKeys: "Message chiffré : en attente de la clé…",
  legacyFormat: "Ancien format : la date, le type et le statut de ce message ne sont pas protégés par la signature.",
  unknownType: "Message de type « {type} » (non pris en charge par cette version).",
  sysCounsellorChanged: "Changement de conseiller.",
  sysTemporaryCounsellor: "Un conseiller assure temporairement le suivi.",
  sysEpochRotated: "Nouvelles clés de chiffrement pour cette conversation.",
  sysMyDeviceAdded: "Un de vos appareils a reçu ses clés de chiffrement.",
  sysMyDeviceRemoved: "Un de vos appareils a été retiré.",
  sysPeerDeviceAdded: "{name} utilise un nouvel appareil : vous pouvez vérifier le numéro de sécurité.",
  sysPeerDeviceRemoved: "{name} a retiré un appareil.",
  safetyNumber: "Numéro de sécurité",
  safetyIntro: "Comparez ce numéro avec celui affiché chez {name} (en personne ou par téléphone). S'ils sont identiques, personne ne s'est interposé.",
  close: "Fermer",
  cancel: "Annuler",
  newBeneficiary: "Nouveau bénéficiaire",
  displayName: "Nom et prénom",
  programme: "Dispositif",
  create: "Créer",
  beneficiaryCreated: "Compte créé pour {name}",
  activationCodeIs: "Code d'activation à transmettre",
  activationExpires: "Valable jusqu'au {when}.",
  loginTaken: "Cet identifiant est déjà utilisé.",
  security: "Sécurité",
  deviceSetupTitle: "Configurer cet appareil",
  deviceSetupIntro: "Vos messages sont chiffrés de bout en bout : cet appareil va créer ses propres clés.",
  deviceCreate: "Créer les clés de cet appareil",
  deviceWorking: "Création des clés…",
  restoreTitle: "Restaurer mes clés",
  restoreIntro: "Vous avez déjà utilisé la messagerie sur un autre appareil. Saisissez votre clé de récupération pour retrouver tout votre historique.",
  recoveryKey: "Clé de récupération",
  restore: "Restaurer",
  restoreFailed: "Cette clé de récupération ne correspond pas.",
  noRecoveryKey: "Je n'ai pas ma clé de récupération",
  noRecoveryKeyIntro: "Cet appareil aura de nouvelles clés. Votre conseiller pourra partager à nouveau l'historique ; en attendant, les anciens messages resteront illisibles ici. Une nouvelle clé de récupération remplacera l'ancienne.",
  continueWithoutKey: "Continuer avec un nouvel appareil",
  recoveryShowTitle: "Votre clé de récupération",
  recoveryShowIntro: "Notez cette clé et gardez-la en lieu sûr. Elle ne sera plus jamais affichée. Elle permet de retrouver vos messages si vous changez d'appareil.",
  recoveryConfirm: "J'ai noté ma clé de récupération",
  continue: "Continuer",
  copy: "Copier",
  copied: "Copié",
  thisDevice: "Cet appareil",
  myDevices: "Mes appareils",
  removeDevice: "Retirer",
  deviceRemoved: "Appareil retiré.",
  waitingReshare: "Cet appareil attend que votre conseiller partage à nouveau l'historique. Les nouveaux messages sont lisibles.",
  keyRequests: "Demandes d'accès à l'historique",
  approve: "Autoriser",
  keyRequestFor: "{name} utilise un nouvel appareil et demande l'accès à l'historique.",
  keyRequestEscrow: "Un appareil d'un superviseur de la structure demande l'accès à l'historique de cette conversation.",
  keysSharedNewDevice: "Clés partagées avec le nouvel appareil de {name}.",
  keysSharedTransfer: "Clés partagées avec l'appareil de {name} (transfert).",
  install: "Installer l'application",
  installed: "Application installée.",
  transfers: "Transferts de bénéficiaires",
  transfer: "Transférer",
  transferTo: "Nouveau conseiller",
  transferMode: "Type de transfert",
  modePermanent: "Définitif",
  modeTemporary: "Temporaire",
  modeTakeBack: "Reprise par le conseiller habituel",
  transferUntil: "Jusqu'au",
  transferDone: "Transfert effectué.",
  counsellor: "Conseiller",
  unknownPerson: "personne non identifiée",
  beneficiary: "Bénéficiaire",
  noStructureList: "La liste de la structure n'est pas disponible sur ce serveur.",
  newMessageTitle: "({n}) Nouveau message",
  keysError: "Chiffrement indisponible : {message}",
  outboxWaiting: "{n} message(s) en attente d'envoi",
  today: "aujourd'hui",
  daySeparator: "{day}",
};

/** The French text for `key`, with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const text = STRINGS[key];
  if (text === undefined) return key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

const TZ = "Europe/Paris";
const timeFmt = new Intl.DateTimeFormat("fr-FR", { hour: "2-digit", minute: "2-digit", timeZone: TZ });
const dateFmt = new Intl.DateTimeFormat("fr-FR", { day: "numeric", month: "short", timeZone: TZ });
const fullFmt = new Intl.DateTimeFormat("fr-FR", { dateStyle: "long", timeStyle: "short", timeZone: TZ });
const dayKeyFmt = new Intl.DateTimeFormat("fr-CA", { timeZone: TZ });

/** "14:05" for today, "3 févr." before (seconds since the epoch). */
export function shortTime(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  return dayKeyFmt.format(d) === dayKeyFmt.format(new Date()) ? timeFmt.format(d) : dateFmt.format(d);
}

/** Hour and minute. */
export function clock(seconds) {
  return timeFmt.format(new Date(seconds * 1000));
}

/** "26 novembre 2026 à 14:05". */
export function longTime(seconds) {
  return fullFmt.format(new Date(seconds * 1000));
}

/** "à 14:05" today or "le 3 févr." */
export function lastSeenText(seconds) {
  if (!seconds) return t("neverSeen");
  const d = new Date(seconds * 1000);
  const today = dayKeyFmt.format(d) === dayKeyFmt.format(new Date());
  return t("lastSeen", { when: today ? `à ${timeFmt.format(d)}` : `le ${dateFmt.format(d)}` });
}
